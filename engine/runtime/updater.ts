import type { FinishEvent, FinishReason, ScoreRequest, ScoreResult } from '../client.ts';
import { toDropserveError } from '../errors.ts';
import { argmax, logSoftmax } from '../sampling/log-softmax.ts';
import { sampleToken } from '../sampling/sampler.ts';
import type { GenerationJob } from './jobs.ts';

const nowMs = (): number => performance.timeOrigin + performance.now();

/** Why a sequence stops after a token, or null when it goes on. */
export type StopDecision = { reason: 'stop'; stopTokenId: number } | { reason: 'length' } | null;

/**
 * The updater: samples a sequence's next token from its logits row, sends it, and decides whether
 * the sequence goes on. A stop id ends the sequence without being sent; max_tokens and the context
 * end it after the token.
 */
export function acceptToken(job: GenerationJob, logits: Float32Array, maxSeqLen: number): StopDecision {
  const { request } = job;
  const sampled = sampleToken(logits, request.sampling, job.sampler, {
    wantLogprob: request.logprobs,
    topLogprobs: request.topLogprobs,
    wantDistribution: request.recordDistributions,
  });
  const time = nowMs();
  if (job.stopIds.has(sampled.tokenId)) return { reason: 'stop', stopTokenId: sampled.tokenId };
  job.timings.firstTokenMs ??= time;
  job.timings.lastTokenMs = time;
  job.sink({
    type: 'token',
    tokenId: sampled.tokenId,
    index: job.output.length,
    logprob: sampled.logprob,
    topLogprobs: sampled.topLogprobs,
    distribution: sampled.distribution,
    timeMs: time,
  });
  job.output.push(sampled.tokenId);
  const total = request.promptTokenIds.length + job.output.length;
  if (job.output.length >= request.maxTokens || total >= maxSeqLen) return { reason: 'length' };
  return null;
}

/** The finish event of a generation; an error keeps its own code (a bug of ours is not an ORT failure). */
export function finishEvent(
  job: GenerationJob,
  reason: FinishReason,
  stopTokenId?: number,
  error?: unknown,
): FinishEvent {
  job.timings.finishedMs = nowMs();
  return {
    type: 'finish',
    reason,
    ...(stopTokenId === undefined ? {} : { stopTokenId }),
    usage: { promptTokens: job.request.promptTokenIds.length, completionTokens: job.output.length },
    timings: job.timings,
    variant: job.variant.def.id,
    ...(reason === 'error' ? { error: toDropserveError(error).toJSON() } : {}),
    ...(job.maskGroup
      ? {
          adaptiveDrops: {
            attention: [...job.maskGroup.drops.dropAttention],
            mlp: [...job.maskGroup.drops.dropMlp],
          },
        }
      : {}),
  };
}

/** Turns logits rows (one per scored position p, predicting tokens[p+1]) into score entries. */
export function collectScores(
  result: ScoreResult,
  request: ScoreRequest,
  logits: Float32Array,
  positions: number[],
  vocab: number,
): void {
  positions.forEach((p, i) => {
    const row = logSoftmax(logits.subarray(i * vocab, (i + 1) * vocab));
    const best = argmax(row);
    result.tokenLogprobs.push(row[request.tokenIds[p + 1]!]!);
    result.argmaxIds.push(best);
    result.argmaxLogprobs.push(row[best]!);
    result.distributions?.push(row);
  });
}

export { nowMs };
