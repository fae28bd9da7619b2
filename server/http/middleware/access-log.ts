import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../env.ts';

/** One log line per request when its response starts (streams log their end separately). */
export const accessLog = (): MiddlewareHandler<AppEnv> =>
  async function accessLog(c, next) {
    await next();
    const ms = Math.round(performance.timeOrigin + performance.now() - c.get('receivedMs'));
    const status = c.res.status;
    const line = { method: c.req.method, path: c.req.path, status, ms };
    const logger = c.get('logger');
    if (status >= 500) logger.warn(line, 'request failed');
    else logger.info(line, 'request');
  };
