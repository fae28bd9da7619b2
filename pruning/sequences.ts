/**
 * Token sequences to score, cut from a corpus. A ScoredSequence says which of its tokens count:
 * every token at index ≥ firstScored is predicted from the tokens before it (firstScored ≥ 1, since
 * position 0 — BOS — has no prefix to be predicted from).
 */
import { DropserveError } from '../engine/errors.ts';
import type { Tokenizer } from '../engine/tokenizer/tokenizer.ts';
import type { Corpus } from './corpus.ts';

export interface ScoredSequence {
  tokens: number[];
  firstScored: number;
}

export interface CalibrationOptions {
  /** First N documents (or windows). */
  numSamples: number;
  /** Tokens per sample, BOS included. */
  seqLen: number;
}

/**
 * Calibration samples: the first N documents, each BOS + its tokens truncated to seqLen in all;
 * for running text, consecutive windows of seqLen − 1 tokens, each with BOS prepended.
 */
export function calibrationSamples(
  tokenizer: Tokenizer,
  corpus: Corpus,
  options: CalibrationOptions,
): ScoredSequence[] {
  const { numSamples, seqLen } = options;
  if (!(Number.isInteger(numSamples) && numSamples >= 1)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--samples must be a positive integer, got ${numSamples}`,
    );
  }
  if (!(Number.isInteger(seqLen) && seqLen >= 2)) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--seq-len must be an integer ≥ 2, got ${seqLen}`);
  }
  const bos = tokenizer.bosTokenId;
  let samples: ScoredSequence[];
  if (corpus.documents) {
    samples = corpus.documents
      .slice(0, numSamples)
      .map((doc) => ({ tokens: tokenizer.encode(doc, { addBos: true }).slice(0, seqLen), firstScored: 1 }));
  } else {
    const ids = tokenizer.encode(corpus.text);
    samples = [];
    for (let start = 0; start < ids.length && samples.length < numSamples; start += seqLen - 1) {
      samples.push({ tokens: [bos, ...ids.slice(start, start + seqLen - 1)], firstScored: 1 });
    }
  }
  samples = samples.filter((s) => s.tokens.length >= 2);
  if (samples.length === 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `data file ${corpus.path} is too short: no sample has a token to predict`,
      {
        param: 'data',
      },
    );
  }
  return samples;
}

export interface EvaluationSlice {
  /** Skip this many documents (or windows) first. */
  skipDocs?: number;
  /** Then take at most this many. */
  maxDocs?: number;
}

export interface EvaluationSequences {
  mode: 'documents' | 'windows';
  sequences: ScoredSequence[];
  /** Tokens a window advances by (windows mode only). */
  stride?: number;
}

/**
 * Per-document scoring: BOS + the document's tokens truncated to the context, every token after BOS
 * scored, no context across documents. Running text: sliding windows of `contextLength` tokens
 * over BOS + the whole text, advancing by stride = contextLength / 2; the first window scores every
 * token, each later one only the tokens no earlier window scored, so each token is predicted once,
 * with at least contextLength / 2 tokens of prefix once the text is that long.
 */
export function evaluationSequences(
  tokenizer: Tokenizer,
  corpus: Corpus,
  contextLength: number,
  slice: EvaluationSlice = {},
): EvaluationSequences {
  const skip = slice.skipDocs ?? 0;
  const take = slice.maxDocs ?? Number.POSITIVE_INFINITY;
  const bos = tokenizer.bosTokenId;
  if (corpus.documents) {
    const docs = corpus.documents.slice(skip, skip + take);
    const sequences = docs
      .map((doc) => ({
        tokens: tokenizer.encode(doc, { addBos: true }).slice(0, contextLength),
        firstScored: 1,
      }))
      .filter((s) => s.tokens.length >= 2);
    return { mode: 'documents', sequences: nonEmpty(sequences, corpus) };
  }
  const ids = [bos, ...tokenizer.encode(corpus.text)];
  const stride = Math.max(1, Math.floor(contextLength / 2));
  const windows: ScoredSequence[] = [];
  let scoredUpTo = 1; // tokens before this index are already scored (index 0 is BOS)
  for (let start = 0; scoredUpTo < ids.length; start += stride) {
    const end = Math.min(start + contextLength, ids.length);
    windows.push({ tokens: ids.slice(start, end), firstScored: scoredUpTo - start });
    scoredUpTo = end;
  }
  return { mode: 'windows', sequences: nonEmpty(windows.slice(skip, skip + take), corpus), stride };
}

function nonEmpty(sequences: ScoredSequence[], corpus: Corpus): ScoredSequence[] {
  if (sequences.length === 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `data file ${corpus.path}: nothing to score (too short, or every document skipped)`,
      {
        param: 'data',
      },
    );
  }
  return sequences;
}

/** Number of predicted tokens over all sequences. */
export function countScoredTokens(sequences: readonly ScoredSequence[]): number {
  return sequences.reduce((n, s) => n + s.tokens.length - s.firstScored, 0);
}
