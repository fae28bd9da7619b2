import type { ErrorCode } from '../../engine/errors.ts';
import { DropserveError } from '../../engine/errors.ts';

/**
 * The one table from dropserve error codes to HTTP: status, OpenAI error `type` and `code`.
 * `code` is a string as in OpenAI's API (vLLM puts the HTTP status there; clients key on strings).
 */
export interface HttpErrorMapping {
  status: number;
  type: string;
  code: string;
}

export const HTTP_ERROR_TABLE: Record<ErrorCode, HttpErrorMapping> = {
  DS_INVALID_ARGUMENT: { status: 400, type: 'invalid_request_error', code: 'invalid_parameter' },
  DS_CONTEXT_OVERFLOW: { status: 400, type: 'invalid_request_error', code: 'context_length_exceeded' },
  DS_KV_EXHAUSTED: { status: 400, type: 'invalid_request_error', code: 'kv_cache_budget_exceeded' },
  DS_UNSUPPORTED: { status: 400, type: 'invalid_request_error', code: 'unsupported_parameter' },
  DS_UNAUTHENTICATED: { status: 401, type: 'invalid_request_error', code: 'invalid_api_key' },
  DS_NOT_FOUND: { status: 404, type: 'invalid_request_error', code: 'model_not_found' },
  DS_OVERLOADED: { status: 429, type: 'rate_limit_error', code: 'server_overloaded' },
  // nginx's "client closed request": only ever seen in logs, the client has gone.
  DS_CANCELLED: { status: 499, type: 'invalid_request_error', code: 'cancelled' },
  DS_SHUTTING_DOWN: { status: 503, type: 'service_unavailable_error', code: 'shutting_down' },
  DS_MODEL_LOAD: { status: 500, type: 'internal_error', code: 'model_load_failed' },
  DS_DEVICE_UNAVAILABLE: { status: 500, type: 'internal_error', code: 'device_unavailable' },
  DS_ORT_RUN_FAILED: { status: 500, type: 'internal_error', code: 'inference_failed' },
  DS_INTERNAL: { status: 500, type: 'internal_error', code: 'internal_error' },
};

/** An error ready to render: what `app.onError` and the SSE error event send. */
export class HttpProblem extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string;
  readonly param: string | null;
  readonly retryAfterSeconds?: number;
  /** The request's finish is already in the metrics (a shutdown cancel, an engine fault): not a rejection too. */
  readonly isFinishCounted: boolean;

  constructor(
    status: number,
    message: string,
    options: {
      type: string;
      code: string;
      param?: string | null;
      retryAfterSeconds?: number;
      cause?: unknown;
      isFinishCounted?: boolean;
    },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HttpProblem';
    this.status = status;
    this.type = options.type;
    this.code = options.code;
    this.param = options.param ?? null;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.isFinishCounted = options.isFinishCounted ?? false;
  }

  /** 5xx problems are faults worth logging with a stack; 4xx are the client's. */
  get isServerFault(): boolean {
    return this.status >= 500 && this.code !== 'shutting_down' && this.code !== 'model_loading';
  }
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

export function errorBody(problem: HttpProblem): OpenAIErrorBody {
  return {
    error: { message: problem.message, type: problem.type, param: problem.param, code: problem.code },
  };
}

/** Any thrown value as a problem; unknown errors become a 500 whose message hides internals. */
export function problemOf(error: unknown): HttpProblem {
  if (error instanceof HttpProblem) return error;
  if (error instanceof DropserveError) {
    const m = HTTP_ERROR_TABLE[error.code];
    const retryAfterSeconds =
      error.retryAfterSeconds ??
      (error.code === 'DS_OVERLOADED' || error.code === 'DS_SHUTTING_DOWN' ? 1 : undefined);
    return new HttpProblem(m.status, error.message, {
      type: m.type,
      code: m.code,
      param: error.param,
      retryAfterSeconds,
      cause: error,
    });
  }
  if (error instanceof Error && error.name === 'AbortError') {
    return new HttpProblem(499, 'the request was cancelled', {
      type: 'invalid_request_error',
      code: 'cancelled',
    });
  }
  return new HttpProblem(500, 'internal server error', {
    type: 'internal_error',
    code: 'internal_error',
    cause: error,
  });
}

export const invalidRequest = (message: string, param?: string, code = 'invalid_parameter'): HttpProblem =>
  new HttpProblem(400, message, { type: 'invalid_request_error', code, param });

export const modelLoading = (): HttpProblem =>
  new HttpProblem(503, 'the model is loading; retry shortly', {
    type: 'service_unavailable_error',
    code: 'model_loading',
    retryAfterSeconds: 5,
  });

export const shuttingDown = (options: { isFinishCounted?: boolean } = {}): HttpProblem =>
  new HttpProblem(503, 'the server is shutting down', {
    type: 'service_unavailable_error',
    code: 'shutting_down',
    retryAfterSeconds: 1,
    isFinishCounted: options.isFinishCounted,
  });
