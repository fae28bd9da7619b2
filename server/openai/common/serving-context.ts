import type { EngineClient } from '../../../engine/client.ts';
import type { TextFinish } from '../../../engine/output/text-generation.ts';
import type { ExperimentRouter } from '../../experiments/experiment-router.ts';
import { HttpProblem, shuttingDown } from '../../http/errors.ts';
import type { Logger } from '../../logger.ts';
import type { ServerMetrics } from '../../metrics/metrics.ts';

/** What an endpoint's serving logic needs from the transport; no Hono types past this line. */
export interface ServingContext {
  engine: EngineClient;
  metrics: ServerMetrics;
  logger: Logger;
  /** Base of the response id ("cmpl-<id>"): the request id. */
  requestId: string;
  receivedMs: number;
  /** Client disconnect or shutdown. */
  signal: AbortSignal;
  /** Shutdown alone, to tell the two apart. */
  shutdownSignal: AbortSignal;
  /** A/B experiments: model names that route to one of several variants. */
  experiments?: ExperimentRouter;
  /** Tells the client which variant serves the request (the x-dropserve-variant header). */
  announceVariant?: (variant: string) => void;
}

/** What a route sends: one JSON body, or SSE chunks ("data: [DONE]" is the transport's job). */
export type ServingResult =
  | { kind: 'json'; body: unknown }
  | { kind: 'stream'; chunks: AsyncIterable<unknown> };

let sequenceCounter = 0;

/**
 * Engine request ids must be unique even when clients reuse an x-request-id, so a process-wide
 * counter joins the response id.
 */
export function engineRequestId(responseId: string, choiceIndex: number): string {
  sequenceCounter = (sequenceCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `${responseId}-${sequenceCounter}-${choiceIndex}`;
}

/**
 * Records a finished sequence in the metrics and turns the finishes a client must not mistake for a
 * result into errors: an engine fault (500) and a cancellation by shutdown (503), marked as counted
 * so that the error handler does not count the request a second time as rejected. A cancellation
 * by the client's own disconnect is not an error: nobody is listening.
 */
export function settleFinish(ctx: ServingContext, finish: TextFinish, maxTokens: number): void {
  ctx.metrics.observeRequest({
    variant: finish.variant,
    transport: 'http',
    finish,
    receivedMs: ctx.receivedMs,
    maxTokens,
  });
  if (finish.reason === 'error') {
    throw new HttpProblem(500, 'generation failed in the engine', {
      type: 'internal_error',
      code: 'inference_failed',
      isFinishCounted: true,
    });
  }
  if (finish.reason === 'abort' && ctx.shutdownSignal.aborted) throw shuttingDown({ isFinishCounted: true });
}

/** vLLM's `stop_reason`: the stop string or stop token id; null for EOS and length. */
export function stopReasonOf(ctx: ServingContext, finish: TextFinish): string | number | null {
  if (finish.stopReason === undefined) return null;
  // The model's end ids, not the tokenizer's: a llama2.c story also ends at BOS.
  const endIds = ctx.engine.model.config.eosTokenIds;
  if (typeof finish.stopReason === 'number' && endIds.includes(finish.stopReason)) {
    return null;
  }
  return finish.stopReason;
}

export const nowSeconds = (): number => Math.floor(Date.now() / 1000);
