import type { Context } from 'hono';
import type { ExperimentRouter } from '../../experiments/experiment-router.ts';
import type { AppEnv } from '../../http/env.ts';
import type { ServerMetrics } from '../../metrics/metrics.ts';
import type { ServingContext } from './serving-context.ts';

/** What the generation routes share, from the app. */
export interface ServingDeps {
  metrics: ServerMetrics;
  shutdownSignal: AbortSignal;
  experiments?: ExperimentRouter;
}

/** Response header naming the variant that served a generation request. */
export const VARIANT_HEADER = 'x-dropserve-variant';

/** The serving context of one request, from what the middleware chain set. */
export function servingContextOf(c: Context<AppEnv>, deps: ServingDeps): ServingContext {
  return {
    engine: c.get('engine'),
    metrics: deps.metrics,
    logger: c.get('logger'),
    requestId: c.get('requestId'),
    receivedMs: c.get('receivedMs'),
    signal: c.get('signal'),
    shutdownSignal: deps.shutdownSignal,
    experiments: deps.experiments,
    announceVariant: (variant) => c.header(VARIANT_HEADER, variant),
  };
}
