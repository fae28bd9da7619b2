/**
 * Teacher-forced log-likelihood of token sequences under one mask: log P(tokens[t] | tokens[<t]) for
 * every scored position t, from the logits at t − 1, with the log-softmax taken in float64.
 */
import type { SublayerMask } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import { tokenLogprob } from '../engine/sampling/log-softmax.ts';
import { DEFAULT_MAX_BATCH_TOKENS, runBatches } from './batches.ts';
import type { ScoredSequence } from './sequences.ts';

export interface ScoringOptions {
  maxBatchTokens?: number;
  signal?: AbortSignal;
  /** Called after each run with the number of sequences it finished. */
  onProgress?: (numSequences: number) => void;
}

export interface SequenceLogprob {
  /** Σ log P over the scored tokens (≤ 0). */
  logprob: number;
  numTokens: number;
}

export async function scoreSequences(
  session: ModelSession,
  sequences: readonly ScoredSequence[],
  mask: SublayerMask,
  options: ScoringOptions = {},
): Promise<SequenceLogprob[]> {
  const vocab = session.config.vocabSize;
  const results: SequenceLogprob[] = sequences.map(() => ({ logprob: 0, numTokens: 0 }));
  // Logits at position t − 1 predict token t.
  const logitPositions = (i: number): number[] => {
    const { tokens, firstScored } = sequences[i]!;
    return Array.from({ length: tokens.length - firstScored }, (_, k) => firstScored - 1 + k);
  };
  await runBatches(
    session,
    sequences.map((s) => s.tokens),
    mask,
    {
      maxBatchTokens: options.maxBatchTokens ?? maxBatchTokensFor(vocab),
      signal: options.signal,
      logitPositions,
    },
    (run) => {
      let row = 0;
      run.rows.forEach((i, r) => {
        const { tokens } = sequences[i]!;
        const result = results[i]!;
        for (const p of run.positions[r]!) {
          result.logprob += tokenLogprob(run.logits.subarray(row * vocab, (row + 1) * vocab), tokens[p + 1]!);
          result.numTokens++;
          row++;
        }
      });
      options.onProgress?.(run.rows.length);
    },
  );
  return results;
}

/**
 * Every scored position fetches a [vocab] logits row (the binding copies each fetched output), so
 * large vocabularies get smaller runs: at most 2^24 floats (64 MiB) of logits per run.
 */
export function maxBatchTokensFor(vocabSize: number): number {
  return Math.max(1, Math.min(DEFAULT_MAX_BATCH_TOKENS, Math.floor(2 ** 24 / vocabSize)));
}

export interface MeanNll {
  /** Token-mean negative log-likelihood in nats. */
  meanNll: number;
  perplexity: number;
  numTokens: number;
}

/** Pools sequence scores into one token-mean NLL (every token weighs the same). */
export function poolNll(scores: readonly SequenceLogprob[]): MeanNll {
  let logprob = 0;
  let numTokens = 0;
  for (const s of scores) {
    logprob += s.logprob;
    numTokens += s.numTokens;
  }
  const meanNll = numTokens > 0 ? -logprob / numTokens : Number.NaN;
  return { meanNll, perplexity: Math.exp(meanNll), numTokens };
}
