import { describe, expect, it } from 'vitest';
import { DropserveError } from '../errors.ts';
import { tokenizerFromGguf } from './gguf-tokenizer.ts';
import { TEST_MERGES, TEST_TOKENS } from './testing/byte-level-vocab.ts';

const tokens = TEST_TOKENS;
const MERGES = TEST_MERGES;
const id = (token: string) => tokens.indexOf(token);
const BOS = id('<|begin_of_text|>');
const EOT = id('<|eot_id|>');
const tokenTypes = tokens.map((_, i) => (i >= BOS ? 3 : 1));

const make = (pre: string | undefined, addBosToken = true) =>
  tokenizerFromGguf(
    {
      model: 'gpt2',
      tokens,
      tokenTypes,
      merges: MERGES,
      ...(pre !== undefined ? { pre } : {}),
      bosTokenId: BOS,
      eosTokenId: EOT,
      addBosToken,
    },
    'test.gguf',
  );

describe('GGUF "gpt2" (byte-level BPE) vocabularies', () => {
  it('merge by rank over byte-level symbols; BOS when the file asks; specials parsed and silent', () => {
    const tokenizer = make('llama-bpe');
    expect(tokenizer.encode('the the', { addBos: true })).toEqual([BOS, id('t'), id('he'), id('Ġthe')]);
    expect(make('llama-bpe', false).encode('the', { addBos: true })).toEqual([id('t'), id('he')]);
    const withSpecial = tokenizer.encode('the<|eot_id|>');
    expect(withSpecial.at(-1)).toBe(EOT);
    expect(tokenizer.decode(withSpecial)).toBe('the');
    for (const text of ['héllo 😀 wörld\n\n  tabs\t', ' the the 12345']) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    }
    expect(tokenizer.bosTokenId).toBe(BOS);
    expect(tokenizer.eosTokenIds).toEqual([EOT]);
  });

  it('tokenizer.ggml.pre picks the split: Llama 3 cuts digits in threes, GPT-2 does not', () => {
    // "12345": Llama 3 splits "123" | "45" before merging; GPT-2 merges across, "3 4" first.
    expect(make('llama-bpe').encode('12345')).toEqual([id('123'), id('4'), id('5')]);
    expect(make('gpt-2').encode('12345')).toEqual([id('12'), id('34'), id('5')]);
    // llama.cpp reads a file without tokenizer.ggml.pre as "default" (GPT-2's split).
    expect(make(undefined).encode('12345')).toEqual([id('12'), id('34'), id('5')]);
  });

  it('an unknown pre-tokenizer name is refused by name', () => {
    let error: unknown;
    try {
      make('tekken');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(DropserveError);
    expect((error as DropserveError).message).toMatch(
      /test\.gguf: tokenizer\.ggml\.pre "tekken" is not supported \(supported: llama-bpe, default, gpt-2\)/,
    );
  });
});
