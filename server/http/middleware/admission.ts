import type { MiddlewareHandler } from 'hono';
import type { ServerLifecycle } from '../../lifecycle.ts';
import type { AppEnv } from '../env.ts';
import { modelLoading, shuttingDown } from '../errors.ts';

export interface AdmissionOptions {
  lifecycle: ServerLifecycle;
}

/**
 * Gate for routes that need the engine: 503 while the model loads or the server drains; otherwise
 * sets `engine` and `signal` (client disconnect or shutdown cancel) and counts the request as in
 * flight until its response ends. Streams end after the handler returns, so they take over the count
 * with `keepInFlight()`.
 */
export const admission = ({ lifecycle }: AdmissionOptions): MiddlewareHandler<AppEnv> =>
  async function admission(c, next) {
    const engine = lifecycle.engine;
    if (lifecycle.state === 'loading' || lifecycle.state === 'failed') throw modelLoading();
    if (!lifecycle.isServing || !engine) throw shuttingDown();
    c.set('engine', engine);
    const request = lifecycle.beginRequest(c.req.raw.signal);
    c.set('signal', request.signal);
    let isHandedOver = false;
    c.set('keepInFlight', () => {
      isHandedOver = true;
      return request.end;
    });
    try {
      await next();
    } finally {
      if (!isHandedOver) request.end();
    }
  };
