import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  describeWithAssets,
  itWithAssets,
  LLAMA2C_TOKENIZER,
  TINYSTORIES_EVAL,
  TOK512,
} from '../../tests/support/shared-assets.ts';
import { SeededRandom } from '../model/random.ts';
import { errorOf } from '../testing/expect-dropserve-error.ts';
import { Llama2cTokenizer } from './llama2c-tokenizer.ts';

const TOK32K = LLAMA2C_TOKENIZER.path;
/** The shared eval stories, read by the tests that need them (they skip without ../shared). */
let cachedStories: string[] | undefined;
const evalStories = (): string[] =>
  (cachedStories ??= fs.readFileSync(TINYSTORIES_EVAL.path, 'utf8').split('\n<|endoftext|>\n'));
const curlyStory = (): string => evalStories().find((s) => s.includes('“Can you help me'))!;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-tok-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * llama2.c's encode() as written in run.c, over the file read independently here: rescan every
 * adjacent pair after each merge. The class uses a heap instead; it must agree token for token.
 */
function referenceEncoder(file: string): (text: string, addBos: boolean) => number[] {
  const buf = fs.readFileSync(file);
  const pieces: string[] = [];
  const scores: number[] = [];
  for (let offset = 4; offset < buf.length; ) {
    scores.push(buf.readFloatLE(offset));
    const length = buf.readInt32LE(offset + 4);
    pieces.push(buf.toString('latin1', offset + 8, offset + 8 + length));
    offset += 8 + length;
  }
  const idOf = new Map<string, number>();
  for (let id = pieces.length - 1; id >= 0; id--) idOf.set(pieces[id]!, id);
  return (text, addBos) => {
    const ids: number[] = addBos ? [1] : [];
    if (text.length > 0) ids.push(idOf.get(' ')!);
    for (const ch of text) {
      const bytes = Buffer.from(ch, 'utf8');
      const id = idOf.get(bytes.toString('latin1'));
      if (id !== undefined) ids.push(id);
      else for (const b of bytes) ids.push(b + 3);
    }
    for (;;) {
      let bestScore = -1e10;
      let bestIdx = -1;
      let bestId = -1;
      for (let i = 0; i + 1 < ids.length; i++) {
        const id = idOf.get(pieces[ids[i]!]! + pieces[ids[i + 1]!]!);
        if (id !== undefined && scores[id]! > bestScore) {
          bestScore = scores[id]!;
          bestIdx = i;
          bestId = id;
        }
      }
      if (bestIdx < 0) return ids;
      ids.splice(bestIdx, 2, bestId);
    }
  };
}

describe('Llama2cTokenizer with stories260K tok512.bin', () => {
  const tok = Llama2cTokenizer.fromFile(TOK512);
  const stories = evalStories;

  it('loads 512 pieces with the documented special and byte ids', () => {
    expect(tok.vocabSize).toBe(512);
    expect(tok.maxTokenLength).toBe(7);
    expect(tok.tokenText(1)).toBe('\n<s>\n');
    expect(tok.tokenText(3 + 0x41)).toBe('A');
    expect(tok.tokenText(3 + 0xe2)).toBe('<0xE2>');
  });

  it('encodes "Once upon a time" as run.c does', () => {
    expect(tok.encode('Once upon a time', { addBos: true })).toEqual([1, 403, 407, 261, 378]);
    expect(tok.encode('Once upon a time')).toEqual([403, 407, 261, 378]);
    expect(tok.encode('')).toEqual([]);
    expect(tok.encode('', { addBos: true })).toEqual([1]);
  });

  itWithAssets(
    [TINYSTORIES_EVAL],
    'round-trips a story with curly quotes, and non-ASCII text through byte fallback',
    () => {
      expect(curlyStory()).toContain('“');
      expect(tok.decode(tok.encode(curlyStory(), { addBos: true }))).toBe(curlyStory());
      // 🙂 (F0 9F 99 82) is not a piece of this 512 vocabulary: four byte ids stand in for it.
      const ids = tok.encode('héllo 🙂', { addBos: true });
      expect(ids.slice(-4)).toEqual([0xf0 + 3, 0x9f + 3, 0x99 + 3, 0x82 + 3]);
      expect(tok.decode(ids)).toBe('héllo 🙂');
    },
  );

  itWithAssets(
    [TINYSTORIES_EVAL],
    'matches the rescan-everything reference on stories and random text',
    () => {
      const referenceEncode = referenceEncoder(TOK512);
      for (const story of [stories()[0]!.slice(0, 800), curlyStory().slice(0, 800)]) {
        expect(tok.encode(story, { addBos: true })).toEqual(referenceEncode(story, true));
      }
      const rng = new SeededRandom(7);
      const alphabet = ['a', 'b', 'e', 'th', ' ', '  ', '.', '\n', 'é', '🙂', 'ing', 'the '];
      for (let trial = 0; trial < 30; trial++) {
        let text = '';
        const length = 1 + Math.floor(rng.next() * 40);
        for (let i = 0; i < length; i++) text += alphabet[Math.floor(rng.next() * alphabet.length)];
        expect(tok.encode(text)).toEqual(referenceEncode(text, false));
        expect(tok.decode(tok.encode(text, { addBos: true }))).toBe(text);
      }
    },
  );

  it('decodes like SentencePiece: leading space dropped at the start and after BOS, specials skipped', () => {
    const [, once, upon] = tok.encode('Once upon', { addBos: true });
    expect(tok.tokenText(once!)).toBe(' Once');
    expect(tok.decode([once!, upon!])).toBe('Once upon');
    expect(tok.decode([upon!, 1, once!, 2])).toBe('uponOnce');
    expect(tok.decode([once!, 1, once!])).toBe('OnceOnce');
    expect(tok.decode([3 + 0xe2, 3 + 0x80])).toBe('\uFFFD'); // incomplete character
    // Ids of a padded model vocabulary beyond the tokenizer's have no text.
    expect(tok.decode([once!, 600, upon!])).toBe('Once upon');
    expect(tok.tokenText(600)).toBe('<extra_600>');
  });
});

describeWithAssets([LLAMA2C_TOKENIZER], 'Llama2cTokenizer with the 32000-piece Llama 2 vocabulary', () => {
  let tok: Llama2cTokenizer;
  beforeAll(() => {
    tok = Llama2cTokenizer.fromFile(TOK32K);
  });

  it('loads all pieces and encodes known Llama 2 ids', () => {
    expect(tok.vocabSize).toBe(32000);
    // "Hello world!" in Llama 2's tokenizer: ▁Hello ▁world !
    expect(tok.encode('Hello world!', { addBos: true })).toEqual([1, 15043, 3186, 29991]);
  });

  itWithAssets([TINYSTORIES_EVAL], 'matches the rescan-everything reference', () => {
    const referenceEncode = referenceEncoder(TOK32K);
    for (const text of [
      curlyStory().slice(0, 400),
      'Ünïcödé “quotes” — and 日本語 🙂 mixed in.',
      evalStories()[3]!.slice(0, 300),
    ]) {
      expect(tok.encode(text, { addBos: true })).toEqual(referenceEncode(text, true));
    }
  });

  it('round-trips sentences with non-ASCII text', () => {
    for (const text of [
      'Héllo wörld, “quoted” – dash.',
      '日本語のテキスト and emoji 🙂🚀',
      '  two leading spaces\ttab',
    ]) {
      expect(tok.decode(tok.encode(text, { addBos: true }))).toBe(text);
    }
  });

  // How fast is measured by `npm run bench:tokenizer`, not here: a test's outcome must not depend on load.
  itWithAssets([TINYSTORIES_EVAL], 'encodes 2 KB of stories and decodes them back', () => {
    const text = evalStories().join('\n').slice(0, 2048);
    const ids = tok.encode(text, { addBos: true });
    expect(ids.length).toBeGreaterThan(300);
    expect(ids.length).toBeLessThan(2048);
    expect(tok.decode(ids)).toBe(text);
  });
});

describe('Llama2cTokenizer.fromFile errors', () => {
  it('names a missing file', () => {
    expect(() => Llama2cTokenizer.fromFile(path.join(tmp, 'none.bin'))).toThrow(
      /none\.bin: no such tokenizer file/,
    );
  });

  it('rejects a truncated file with the entry it stopped at', () => {
    const file = path.join(tmp, 'short.bin');
    fs.writeFileSync(file, fs.readFileSync(TOK512).subarray(0, 3000));
    const error = errorOf(() => Llama2cTokenizer.fromFile(file));
    expect(error.code).toBe('DS_MODEL_LOAD');
    expect(error.message).toMatch(/entry \d+/);
  });

  it('reads only vocabSize entries when given, and fails when the file has fewer', () => {
    expect(Llama2cTokenizer.fromFile(TOK512, { vocabSize: 300 }).vocabSize).toBe(300);
    expect(() => Llama2cTokenizer.fromFile(TOK512, { vocabSize: 600 })).toThrow(
      /holds 512 pieces, the model expects 600/,
    );
  });
});
