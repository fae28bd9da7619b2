import type { MiddlewareHandler } from 'hono';
import { DropserveError } from '../../../engine/errors.ts';
import type { AppEnv } from '../env.ts';
import { HttpProblem } from '../errors.ts';

export interface BodyLimitOptions {
  maxBytes: number;
  /** How much of an oversized body is read and thrown away so the 413 can be delivered. */
  maxDrainBytes?: number;
}

const tooLarge = (maxBytes: number): HttpProblem =>
  new HttpProblem(413, `request body is larger than the server's limit of ${maxBytes} bytes`, {
    type: 'invalid_request_error',
    code: 'request_too_large',
  });

/**
 * Reads the body once, up to maxBytes (declared by Content-Length or streamed chunked), into the
 * `body` context variable. An oversized body is read to its end (up to maxDrainBytes) before the 413
 * goes out: answering while the client is still sending makes many clients see a reset instead of
 * the error.
 */
export const bodyLimit = ({
  maxBytes,
  maxDrainBytes = 64 * 1024 * 1024,
}: BodyLimitOptions): MiddlewareHandler<AppEnv> =>
  async function bodyLimit(c, next) {
    const stream = c.req.raw.body;
    if (!stream) return next();
    const reader = stream.getReader();
    const declared = Number(c.req.header('content-length'));
    let size = 0;
    const chunks: Uint8Array[] = [];
    let isOver = Number.isFinite(declared) && declared > maxBytes;
    for (;;) {
      const { done, value } = await reader.read().catch((e: unknown) => {
        // The client hung up mid-body: an abort (counted as one), not a malformed request.
        if (c.req.raw.signal.aborted) {
          throw new DropserveError('DS_CANCELLED', 'the client closed the connection', { cause: e });
        }
        throw new HttpProblem(400, `could not read the request body (${(e as Error).message})`, {
          type: 'invalid_request_error',
          code: 'invalid_body',
        });
      });
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) isOver = true;
      if (isOver) {
        if (size > maxDrainBytes) {
          await reader.cancel();
          break;
        }
        continue;
      }
      chunks.push(value);
    }
    if (isOver) throw tooLarge(maxBytes);
    c.set('body', Buffer.concat(chunks, size));
    await next();
  };
