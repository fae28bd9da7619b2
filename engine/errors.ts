/**
 * Every error dropserve raises on purpose carries a stable code. Transports map codes to HTTP
 * statuses and gRPC status codes in one table each; nothing switches on message text.
 */
export type ErrorCode =
  | 'DS_INVALID_ARGUMENT' // bad request parameters
  | 'DS_CONTEXT_OVERFLOW' // prompt or prompt + max_tokens beyond the model's context
  | 'DS_NOT_FOUND' // unknown model / variant
  | 'DS_OVERLOADED' // waiting queue full
  | 'DS_KV_EXHAUSTED' // request can never fit the KV budget
  | 'DS_UNAUTHENTICATED'
  | 'DS_CANCELLED'
  | 'DS_MODEL_LOAD' // missing / corrupt / mismatched model files
  | 'DS_UNSUPPORTED' // unsupported architecture or feature
  | 'DS_DEVICE_UNAVAILABLE' // requested execution provider cannot be used here
  | 'DS_ORT_RUN_FAILED'
  | 'DS_SHUTTING_DOWN'
  | 'DS_INTERNAL';

export interface DropserveErrorOptions {
  cause?: unknown;
  /** Request field the error is about (OpenAI's `param`). */
  param?: string;
  /** Seconds a client should wait before retrying (overload). */
  retryAfterSeconds?: number;
}

export class DropserveError extends Error {
  readonly code: ErrorCode;
  readonly param?: string;
  readonly retryAfterSeconds?: number;

  constructor(code: ErrorCode, message: string, options: DropserveErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DropserveError';
    this.code = code;
    this.param = options.param;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  /** Plain data for crossing a worker_threads boundary. */
  toJSON(): SerializedError {
    return {
      code: this.code,
      message: this.message,
      param: this.param,
      retryAfterSeconds: this.retryAfterSeconds,
    };
  }

  static fromJSON(e: SerializedError): DropserveError {
    return new DropserveError(e.code, e.message, { param: e.param, retryAfterSeconds: e.retryAfterSeconds });
  }
}

export interface SerializedError {
  code: ErrorCode;
  message: string;
  param?: string;
  retryAfterSeconds?: number;
}

export function isDropserveError(e: unknown): e is DropserveError {
  return e instanceof DropserveError;
}

/** Any thrown value as a DropserveError, keeping the original as cause. */
export function toDropserveError(e: unknown): DropserveError {
  if (e instanceof DropserveError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new DropserveError('DS_INTERNAL', message, { cause: e });
}

export const modelLoadError = (path: string, what: string, cause?: unknown): DropserveError =>
  new DropserveError('DS_MODEL_LOAD', `${path}: ${what}`, { cause });
