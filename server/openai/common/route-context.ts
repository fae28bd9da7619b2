import type { Context } from 'hono';
import type { AppEnv } from '../../http/env.ts';
import type { ServerMetrics } from '../../metrics/metrics.ts';
import type { ServingContext } from './serving-context.ts';

/** The serving context of one request, from what the middleware chain set. */
export function servingContextOf(
  c: Context<AppEnv>,
  deps: { metrics: ServerMetrics; shutdownSignal: AbortSignal },
): ServingContext {
  return {
    engine: c.get('engine'),
    metrics: deps.metrics,
    logger: c.get('logger'),
    requestId: c.get('requestId'),
    receivedMs: c.get('receivedMs'),
    signal: c.get('signal'),
    shutdownSignal: deps.shutdownSignal,
  };
}
