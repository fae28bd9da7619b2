import * as grpc from '@grpc/grpc-js';
import { DropserveError, type ErrorCode, toDropserveError } from '../../engine/errors.ts';
import { CallAbortedError } from './call-signal.ts';

/**
 * The one table from dropserve error codes to gRPC status codes. A Record over ErrorCode, so a new
 * code does not compile until it has a row here.
 */
export const GRPC_STATUS_BY_ERROR_CODE: Record<ErrorCode, grpc.status> = {
  DS_INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  DS_CONTEXT_OVERFLOW: grpc.status.INVALID_ARGUMENT,
  DS_NOT_FOUND: grpc.status.NOT_FOUND,
  // Queue full: retry later (a `retry-after` trailer says when).
  DS_OVERLOADED: grpc.status.RESOURCE_EXHAUSTED,
  // The request alone exceeds the KV budget: no retry-after, since waiting will not help.
  DS_KV_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  DS_UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  DS_CANCELLED: grpc.status.CANCELLED,
  DS_MODEL_LOAD: grpc.status.UNAVAILABLE,
  DS_UNSUPPORTED: grpc.status.UNIMPLEMENTED,
  DS_DEVICE_UNAVAILABLE: grpc.status.UNAVAILABLE,
  DS_ORT_RUN_FAILED: grpc.status.INTERNAL,
  DS_SHUTTING_DOWN: grpc.status.UNAVAILABLE,
  DS_INTERNAL: grpc.status.INTERNAL,
};

/** Trailer telling an overloaded client how many seconds to back off (as HTTP's Retry-After). */
export const RETRY_AFTER_TRAILER = 'retry-after';
/** Trailer carrying the stable dropserve error code, for clients that switch on it. */
export const ERROR_CODE_TRAILER = 'dropserve-error-code';
const DEFAULT_RETRY_AFTER_SECONDS = 1;

/**
 * Any thrown value as the status a gRPC call ends with. A call the client cancelled or let expire
 * keeps its own status; everything else goes through the table.
 */
export function toServiceError(error: unknown): Partial<grpc.ServiceError> {
  if (error instanceof CallAbortedError) return { code: error.status, details: error.message };
  const e = toDropserveError(error);
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_TRAILER, e.code);
  if (e.code === 'DS_OVERLOADED') {
    metadata.set(RETRY_AFTER_TRAILER, String(e.retryAfterSeconds ?? DEFAULT_RETRY_AFTER_SECONDS));
  }
  return { code: GRPC_STATUS_BY_ERROR_CODE[e.code], details: e.message, metadata };
}

export function isClientError(error: unknown): boolean {
  if (error instanceof CallAbortedError) return true;
  if (!(error instanceof DropserveError)) return false;
  const status = GRPC_STATUS_BY_ERROR_CODE[error.code];
  return status !== grpc.status.INTERNAL && status !== grpc.status.UNAVAILABLE;
}
