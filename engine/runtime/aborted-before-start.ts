import type { FinishEvent, GenerateRequest } from '../client.ts';

/**
 * The finish of a request whose signal had already fired when it reached the engine (the client left
 * while it was read or queued on the transport). It ends like any other aborted request, with a
 * finish event, so every consumer counts it the one way it counts aborts, rather than as a thrown
 * error some paths never record.
 */
export function abortedBeforeStart(request: GenerateRequest): FinishEvent {
  const now = performance.timeOrigin + performance.now();
  return {
    type: 'finish',
    reason: 'abort',
    usage: { promptTokens: request.promptTokenIds.length, completionTokens: 0 },
    timings: { arrivalMs: now, finishedMs: now },
    variant: request.variant,
  };
}
