import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithAssets, TINYSTORIES_656K, TINYSTORIES_EVAL } from '../../tests/support/shared-assets.ts';
import { errorOf } from '../testing/expect-dropserve-error.ts';
import { HfTokenizer } from './hf-tokenizer.ts';

const TINY = TINYSTORIES_656K.path;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-hftok-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** tinystories-656K's tokenizer.json with a tokenizer_config.json given by the test. */
function dirWithConfig(
  name: string,
  tokenizerConfig: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(TINY, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(tokenizerConfig));
  for (const [file, json] of Object.entries(extra))
    fs.writeFileSync(path.join(dir, file), JSON.stringify(json));
  return dir;
}

describeWithAssets([TINYSTORIES_656K, TINYSTORIES_EVAL], 'HfTokenizer on tinystories-656K', () => {
  let tok: HfTokenizer;
  let stories: string[];
  beforeAll(() => {
    tok = HfTokenizer.fromDir(TINY);
    stories = fs.readFileSync(TINYSTORIES_EVAL.path, 'utf8').split('\n<|endoftext|>\n');
  });

  it('reads ids and special strings', () => {
    expect(tok.vocabSize).toBe(2048);
    expect(tok.bosTokenId).toBe(1);
    expect(tok.eosTokenIds).toEqual([2]);
    expect(tok.specialTokens).toEqual({ bos: '<|start_story|>', eos: '<|end_story|>' });
    expect(tok.addsBos).toBe(true);
    expect(tok.chatTemplate).toBeUndefined(); // its tokenizer_config.json has none
  });

  it('adds BOS only when asked and round-trips story text', () => {
    const text = stories[0]!;
    const withBos = tok.encode(text, { addBos: true });
    const without = tok.encode(text);
    expect(withBos[0]).toBe(1);
    expect(withBos.slice(1)).toEqual(without);
    expect(without).not.toContain(1);
    expect(tok.decode(withBos)).toBe(text);
    expect(tok.decode([...without, 2])).toBe(text); // EOS skipped
  });

  it('encodes "Once upon a time" with its SentencePiece-style pieces', () => {
    const ids = tok.encode('Once upon a time');
    expect(ids.map((id) => tok.tokenText(id))).toEqual(['▁', 'On', 'ce▁', 'upon▁a▁tim', 'e']);
    expect(tok.decode(ids)).toBe('Once upon a time');
    expect(tok.encode('')).toEqual([]);
    expect(tok.decode([])).toBe('');
    expect(tok.decode([...ids, 5000])).toBe('Once upon a time'); // padded-vocab id: no text
    expect(tok.tokenText(5000)).toBe('<extra_5000>');
  });

  it('turns special-token strings in the text into their ids (chat templates rely on it)', () => {
    expect(tok.encode('<|end_story|>')).toEqual([2]);
  });
});

describeWithAssets([TINYSTORIES_656K], 'HfTokenizer.fromDir config variants', () => {
  it('takes the "default" entry of a chat_template list and AddedToken-style bos/eos', () => {
    const dir = dirWithConfig('list-template', {
      bos_token: { content: '<|start_story|>' },
      eos_token: { content: '<|end_story|>' },
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: '{{ messages[0].content }}' },
      ],
    });
    const tok = HfTokenizer.fromDir(dir);
    expect(tok.chatTemplate).toBe('{{ messages[0].content }}');
    expect(tok.specialTokens.bos).toBe('<|start_story|>');
    // No add_bos_token: the TemplateProcessing post-processor adds <|start_story|>, so BOS is used.
    expect(tok.addsBos).toBe(true);
  });

  it('honours add_bos_token false and takes ids from config files when the config names no tokens', () => {
    const dir = dirWithConfig(
      'no-bos',
      { add_bos_token: false },
      {
        'config.json': { bos_token_id: 1, eos_token_id: 2 },
        'generation_config.json': { eos_token_id: [2, 0] },
      },
    );
    const tok = HfTokenizer.fromDir(dir);
    expect(tok.addsBos).toBe(false);
    expect(tok.encode('Once', { addBos: true })[0]).not.toBe(1);
    expect(tok.bosTokenId).toBe(1);
    expect(tok.eosTokenIds).toEqual([2, 0]);
    expect(tok.specialTokens).toEqual({ bos: '<|start_story|>', eos: '<|end_story|>' });
  });

  it('reads chat_template.jinja when tokenizer_config.json has no template', () => {
    const dir = dirWithConfig('jinja-file', { eos_token: '<|end_story|>' });
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), '{{ bos_token }}hi');
    expect(HfTokenizer.fromDir(dir).chatTemplate).toBe('{{ bos_token }}hi');
  });

  it('fails clearly without tokenizer.json or without any EOS', () => {
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, 'tokenizer.model'), '');
    expect(() => HfTokenizer.fromDir(empty)).toThrow(
      /no tokenizer\.json \(only a SentencePiece tokenizer\.model/,
    );
    const noEos = dirWithConfig('no-eos', {});
    const error = errorOf(() => HfTokenizer.fromDir(noEos));
    expect(error.message).toContain('no EOS token');
  });
});
