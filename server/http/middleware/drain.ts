import type { MiddlewareHandler } from 'hono';
import type { ServerLifecycle } from '../../lifecycle.ts';
import type { ServerMetrics } from '../../metrics/metrics.ts';
import type { AppEnv } from '../env.ts';
import { errorBody, shuttingDown } from '../errors.ts';

/** Routes still answered normally while draining: scrapers want the final numbers. */
const OPEN_WHILE_DRAINING = new Set(['/metrics', '/health']);

/**
 * During shutdown the listener stays open until in-flight work is done, so clients on kept-alive
 * connections (and new ones) get an answer rather than a reset: 503 `shutting_down` for everything
 * but /metrics (and /health, which gives its own 503), always with `Connection: close` so the client
 * opens its next connection elsewhere and the socket is gone by the time the server closes.
 */
export interface DrainGateOptions {
  lifecycle: ServerLifecycle;
  metrics: ServerMetrics;
}

export const drainGate = ({ lifecycle, metrics }: DrainGateOptions): MiddlewareHandler<AppEnv> =>
  async function drainGate(c, next) {
    if (!lifecycle.isShuttingDown) {
      await next();
      // Admitted before the drain, answered during it: that connection is not reused either.
      if (lifecycle.isShuttingDown) c.res.headers.set('Connection', 'close');
      return;
    }
    if (!OPEN_WHILE_DRAINING.has(c.req.path)) {
      const problem = shuttingDown();
      if (c.req.path.startsWith('/v1/')) metrics.observeRejected({ transport: 'http', reason: problem.code });
      return c.json(errorBody(problem), 503, {
        'Retry-After': String(problem.retryAfterSeconds),
        Connection: 'close',
      });
    }
    await next();
    c.res.headers.set('Connection', 'close');
  };
