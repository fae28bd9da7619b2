import type { MiddlewareHandler } from 'hono';
import { bodyLimit as honoBodyLimit } from 'hono/body-limit';
import type { AppEnv } from '../env.ts';
import { HttpProblem } from '../errors.ts';

export interface BodyLimitOptions {
  maxBytes: number;
}

/** Hono's body limit (Content-Length and chunked bodies), answering 413 in OpenAI's error shape. */
export const bodyLimit = ({ maxBytes }: BodyLimitOptions): MiddlewareHandler<AppEnv> =>
  honoBodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new HttpProblem(413, `request body is larger than the server's limit of ${maxBytes} bytes`, {
        type: 'invalid_request_error',
        code: 'request_too_large',
      });
    },
  });
