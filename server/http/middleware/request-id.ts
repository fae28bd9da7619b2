import { randomUUID } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { Logger } from '../../logger.ts';
import type { AppEnv } from '../env.ts';

export interface RequestIdOptions {
  headerName?: string;
  logger: Logger;
}

// A caller's id is kept only if it is short and plain: it ends up in headers and log lines.
const SAFE_ID = /^[\w.:-]{1,128}$/;

/** Takes the caller's x-request-id (or makes one), echoes it on every response, binds it to logs. */
export const requestId = ({
  headerName = 'x-request-id',
  logger,
}: RequestIdOptions): MiddlewareHandler<AppEnv> =>
  async function requestId(c, next) {
    c.set('receivedMs', performance.timeOrigin + performance.now());
    const incoming = c.req.header(headerName);
    const id = incoming !== undefined && SAFE_ID.test(incoming) ? incoming : randomUUID();
    c.set('requestId', id);
    c.set('logger', logger.child({ reqId: id }));
    c.header(headerName, id);
    await next();
    // An error response built by onError replaces c.res; make sure it still carries the id.
    c.res.headers.set(headerName, id);
  };
