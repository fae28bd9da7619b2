import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  itWithAssets,
  TINYSTORIES_656K,
  TINYSTORIES_EVAL,
  TOK512,
} from '../../tests/support/shared-assets.ts';
import { SeededRandom } from '../model/random.ts';
import { ByteTokenizer } from './byte-tokenizer.ts';
import { HfTokenizer } from './hf-tokenizer.ts';
import { IncrementalDetokenizer } from './incremental-detokenizer.ts';
import { Llama2cTokenizer } from './llama2c-tokenizer.ts';
import type { Tokenizer } from './tokenizer.ts';

const tok512 = Llama2cTokenizer.fromFile(TOK512);
/** The shared eval stories, read by the tests that need them (they skip without ../shared). */
let cachedStories: string[] | undefined;
const stories = (): string[] =>
  (cachedStories ??= fs.readFileSync(TINYSTORIES_EVAL.path, 'utf8').split('\n<|endoftext|>\n'));

/** Streams ids one by one; returns the pieces (flush last) and the largest decode window seen. */
function stream(tok: Tokenizer, ids: readonly number[], promptIds: readonly number[] = []) {
  const detok = new IncrementalDetokenizer(tok, promptIds);
  const pieces: string[] = [];
  let maxWindow = 0;
  for (const id of ids) {
    pieces.push(detok.push(id));
    maxWindow = Math.max(maxWindow, detok.windowTokens);
  }
  const flushed = detok.flush();
  return { pieces, flushed, text: pieces.join('') + flushed, maxWindow };
}

/** The ids of each UTF-8 byte of the text (llama2.c byte fallback: byte + 3). */
function byteIds(text: string): number[] {
  return Array.from(Buffer.from(text, 'utf8'), (b) => b + 3);
}

describe('IncrementalDetokenizer', () => {
  itWithAssets(
    [TINYSTORIES_EVAL],
    'streams stories260K text (BOS-separated stories, EOS at the end) exactly as decode() gives it',
    () => {
      // What the model emits when it writes two stories in a row: BOS starts each one.
      const ids = [...tok512.encode(stories()[0]!), 1, ...tok512.encode(stories()[1]!), 2];
      const { pieces, text, maxWindow } = stream(tok512, [1, ...ids]);
      expect(text).toBe(tok512.decode([1, ...ids]));
      expect(text.startsWith(stories()[0]!.slice(0, 20))).toBe(true); // leading space of the first piece dropped
      expect(pieces.filter((p) => p.length > 0).length).toBeGreaterThan(ids.length / 2); // it really streams
      expect(maxWindow).toBeLessThan(8);
    },
  );

  it('holds back incomplete characters from byte-fallback ids: "héllo 🙂"', () => {
    const ids = [...tok512.encode('h'), ...byteIds('éllo 🙂')];
    const { pieces, flushed, text } = stream(tok512, ids);
    expect(text).toBe('héllo 🙂');
    expect(text).toBe(tok512.decode(ids));
    expect(flushed).toBe('');
    for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
    // The four bytes of 🙂 come out at once, on the last of them.
    expect(pieces.slice(-4)).toEqual(['', '', '', '🙂']);
  });

  it('agrees with decode() on random mixes of pieces and multi-byte byte-fallback runs', () => {
    const rng = new SeededRandom(2024);
    const alphabet = [' the', ' cat', '.', 'é', '日本', '🙂', '“', ' ', '\n', 'ß', 'a'];
    for (let trial = 0; trial < 40; trial++) {
      const ids: number[] = rng.next() < 0.3 ? [1] : [];
      const count = 1 + Math.floor(rng.next() * 12);
      for (let i = 0; i < count; i++) {
        const text = alphabet[Math.floor(rng.next() * alphabet.length)]!;
        ids.push(...(rng.next() < 0.5 ? byteIds(text) : tok512.encode(text).slice(1)));
      }
      const { pieces, text } = stream(tok512, ids);
      expect(text).toBe(tok512.decode(ids));
      for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
    }
  });

  it('continues after a prompt: the pieces are what the generated ids add to the prompt text', () => {
    const prompt = tok512.encode('Once upon a time', { addBos: true });
    const generated = tok512.encode(' there was a little girl named Lily.').slice(1);
    const { text } = stream(tok512, generated, prompt);
    expect(text).toBe(' there was a little girl named Lily.');
    expect(text).toBe(tok512.decode([...prompt, ...generated]).slice(tok512.decode(prompt).length));
  });

  it('emits a trailing incomplete character on flush, as decode() does', () => {
    const ids = byteIds('ok 🙂').slice(0, -2);
    const { pieces, flushed, text } = stream(tok512, ids);
    expect(pieces.join('')).toBe('ok ');
    expect(flushed).toBe('\uFFFD');
    expect(text).toBe(tok512.decode(ids));
  });

  itWithAssets(
    [TINYSTORIES_656K, TINYSTORIES_EVAL],
    'streams the Hugging Face SentencePiece-style tokenizer with its spaces intact',
    () => {
      const tinyHf = HfTokenizer.fromDir(TINYSTORIES_656K.path);
      const ids = tinyHf.encode(stories()[2]!, { addBos: true });
      const { text, maxWindow } = stream(tinyHf, ids);
      expect(text).toBe(tinyHf.decode(ids));
      expect(text).toBe(stories()[2]);
      expect(maxWindow).toBeLessThan(8);
      const prompt = tinyHf.encode('Once upon a', { addBos: true });
      const generated = tinyHf.encode('Once upon a time there was').slice(prompt.length - 1);
      expect(stream(tinyHf, generated, prompt).text).toBe(
        tinyHf.decode([...prompt, ...generated]).slice(tinyHf.decode(prompt).length),
      );
    },
  );

  it('works with the byte tokenizer of the synthetic model', () => {
    const tok = new ByteTokenizer(512);
    const ids = tok.encode('naïve 🙂 text');
    const { pieces, text } = stream(tok, ids);
    expect(text).toBe('naïve 🙂 text');
    for (const piece of pieces) expect(piece).not.toContain('\uFFFD');
  });

  itWithAssets([TINYSTORIES_EVAL], 'keeps the window small over a long stream (O(1) per token)', () => {
    const ids = tok512.encode(stories().slice(0, 20).join('\n'));
    const { text, maxWindow } = stream(tok512, ids);
    expect(ids.length).toBeGreaterThan(2000);
    expect(text).toBe(tok512.decode(ids));
    expect(maxWindow).toBeLessThan(8);
  });
});
