import type { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';

/** The parts of a grpc-js server call that say when the client stops waiting. */
export type CancellableCall = Pick<EventEmitter, 'on' | 'off'> & {
  readonly cancelled: boolean;
  getDeadline(): grpc.Deadline;
};

/** Why a call's signal fired; toServiceError turns it into the matching status. */
export class CallAbortedError extends Error {
  readonly status: grpc.status.CANCELLED | grpc.status.DEADLINE_EXCEEDED;

  constructor(status: grpc.status.CANCELLED | grpc.status.DEADLINE_EXCEEDED) {
    super(status === grpc.status.CANCELLED ? 'call cancelled by the client' : 'deadline exceeded');
    this.name = 'CallAbortedError';
    this.status = status;
  }
}

export interface CallSignal {
  /** Aborted with a CallAbortedError as its reason; `signal.throwIfAborted()` rethrows it. */
  signal: AbortSignal;
  /** Removes the listener and the deadline timer; call once the request has finished. */
  dispose(): void;
}

/**
 * An AbortSignal that fires when the client cancels the call or its deadline passes, so the engine
 * sequence (and its KV slot) is freed instead of generating for nobody. grpc-js answers an expired
 * deadline with DEADLINE_EXCEEDED but may tell the handler only when the stream closes; the timer
 * here stops the engine at the deadline itself.
 */
export function callSignal(call: CancellableCall): CallSignal {
  const controller = new AbortController();
  const abort = (status: grpc.status.CANCELLED | grpc.status.DEADLINE_EXCEEDED): void => {
    if (!controller.signal.aborted) controller.abort(new CallAbortedError(status));
  };
  const onCancelled = (): void => abort(grpc.status.CANCELLED);
  call.on('cancelled', onCancelled);
  if (call.cancelled) onCancelled();
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  const timer = Number.isFinite(deadlineMs)
    ? setTimeout(() => abort(grpc.status.DEADLINE_EXCEEDED), Math.max(0, deadlineMs - Date.now()))
    : undefined;
  return {
    signal: controller.signal,
    dispose: (): void => {
      call.off('cancelled', onCancelled);
      clearTimeout(timer);
    },
  };
}
