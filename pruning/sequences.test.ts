import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ByteTokenizer } from '../engine/tokenizer/byte-tokenizer.ts';
import { planBatches } from './batches.ts';
import { readCorpus, splitDocuments } from './corpus.ts';
import { calibrationSamples, countScoredTokens, evaluationSequences } from './sequences.ts';

const tokenizer = new ByteTokenizer(300);
const running = (text: string) => ({ path: 'mem', text, documents: null });

describe('corpus', () => {
  it('splits on <|endoftext|> lines only, trimming and dropping empties', () => {
    expect(splitDocuments('a b\n<|endoftext|>\n\nc <|endoftext|> d\n<|endoftext|>\n')).toEqual([
      'a b',
      'c <|endoftext|> d',
    ]);
    expect(splitDocuments('no separators here')).toBeNull();
  });

  it('refuses missing and empty files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dropserve-corpus-'));
    try {
      writeFileSync(join(dir, 'empty.txt'), ' \n\n');
      expect(() => readCorpus(join(dir, 'empty.txt'))).toThrow(/is empty/);
      expect(() => readCorpus(join(dir, 'missing.txt'))).toThrow(/cannot read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sequences', () => {
  it('calibration: first N documents, BOS prepended, truncated to seqLen in all', () => {
    const corpus = { path: 'mem', text: '', documents: ['abcdef', 'xy', 'zzz'] };
    const samples = calibrationSamples(tokenizer, corpus, { numSamples: 2, seqLen: 4 });
    expect(samples.map((s) => s.tokens.length)).toEqual([4, 3]);
    expect(samples.every((s) => s.tokens[0] === tokenizer.bosTokenId && s.firstScored === 1)).toBe(true);
  });

  it('calibration on running text: consecutive windows of seqLen − 1 tokens, each after BOS', () => {
    const samples = calibrationSamples(tokenizer, running('0123456789'), { numSamples: 10, seqLen: 5 });
    expect(samples.map((s) => s.tokens.length)).toEqual([5, 5, 3]);
    expect(() => calibrationSamples(tokenizer, running(''), { numSamples: 1, seqLen: 4 })).toThrow(
      /too short/,
    );
  });

  it('sliding windows score every token after BOS exactly once', () => {
    const text = 'abcdefghijklmnopqrstuvwxyz';
    const { sequences, stride, mode } = evaluationSequences(tokenizer, running(text), 8);
    expect(mode).toBe('windows');
    expect(stride).toBe(4);
    const numTokens = tokenizer.encode(text, { addBos: true }).length;
    expect(countScoredTokens(sequences)).toBe(numTokens - 1);
    expect(sequences[0]!.firstScored).toBe(1);
    expect(sequences[1]!.firstScored).toBe(4); // only the 4 new tokens of the second window
    expect(sequences.every((s) => s.tokens.length <= 8)).toBe(true);
  });

  it('batches hold at most maxBatchTokens padded tokens, similar lengths together', () => {
    const batches = planBatches([10, 3, 9, 2, 10], 20);
    expect(batches).toEqual([[0, 4], [2, 1], [3]]);
    expect(planBatches([50], 20)).toEqual([[0]]); // a long sequence still runs alone
  });
});
