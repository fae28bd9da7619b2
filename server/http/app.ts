import { Hono } from 'hono';
import { experimentsRoute } from '../admin/experiments/route.ts';
import { variantsRoute } from '../admin/variants/route.ts';
import { dashboardRoute } from '../dashboard/route.ts';
import { ExperimentRouter } from '../experiments/experiment-router.ts';
import { ExperimentStatistics } from '../experiments/experiment-statistics.ts';
import type { ExperimentsFileStatus } from '../experiments/experiments-file-source.ts';
import type { VariantFidelity } from '../fidelity/shadow-scorer.ts';
import type { ServerLifecycle } from '../lifecycle.ts';
import type { Logger } from '../logger.ts';
import type { ServerMetrics } from '../metrics/metrics.ts';
import { chatRoute } from '../openai/chat/route.ts';
import { completionsRoute } from '../openai/completions/route.ts';
import { modelsRoute } from '../openai/models/route.ts';
import type { AppEnv } from './env.ts';
import { errorBody, HttpProblem, problemOf } from './errors.ts';
import { accessLog } from './middleware/access-log.ts';
import { admission } from './middleware/admission.ts';
import { bearerAuth } from './middleware/auth.ts';
import { bodyLimit } from './middleware/body-limit.ts';
import { drainGate } from './middleware/drain.ts';
import { requestId } from './middleware/request-id.ts';
import { healthRoute } from './routes/health.ts';
import { metricsRoute } from './routes/metrics.ts';

export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface HttpAppDeps {
  lifecycle: ServerLifecycle;
  metrics: ServerMetrics;
  logger: Logger;
  /** Bearer key required on /v1/* (not on /health and /metrics). */
  apiKey?: string;
  maxBodyBytes?: number;
  /** A/B experiments (default: an empty router over the engine's variants). */
  experiments?: ExperimentRouter;
  /** Their statistics and guardrails (default: fed from `metrics`' completed requests, no guardrails). */
  experimentStatistics?: ExperimentStatistics;
  /** The --experiments-file state shown in GET /v1/experiments (undefined: no file). */
  experimentsFileStatus?: () => ExperimentsFileStatus | undefined;
  /** Live fidelity read-out for GET /v1/variants (absent: shadow scoring off). */
  fidelity?: (variant: string) => VariantFidelity | undefined;
}

/**
 * A router that knows the served variants once the engine is there (and none before), and counts
 * its assignments in the metrics.
 */
export function experimentRouterFor(lifecycle: ServerLifecycle, metrics: ServerMetrics): ExperimentRouter {
  return new ExperimentRouter(
    (name) => lifecycle.engine?.variants().some((v) => v.id === name) ?? false,
    Math.random,
    (experiment, variant) => metrics.observeAssignment(experiment, variant),
    () => lifecycle.engine?.model.name,
  );
}

/** Feeds an experiment book from the metrics' completed requests (fidelity comes from the scorer). */
export function feedExperimentStatistics(metrics: ServerMetrics, statistics: ExperimentStatistics): void {
  metrics.onCompletedRequest((variant, sample) =>
    statistics.observeRequest(variant, {
      ttftMs: sample.ttftMs,
      tpotMs: sample.tpotMs,
      e2eMs: sample.e2eMs,
      outputTokens: sample.outputTokens,
    }),
  );
}

/**
 * The OpenAI-compatible HTTP API. Web-standard Request → Response (the Node adapter lives in
 * start-server.ts), so tests can drive it with app.request() and no socket.
 */
export function createHttpApp(deps: HttpAppDeps): Hono<AppEnv> {
  const { lifecycle, metrics, logger } = deps;
  const app = new Hono<AppEnv>();
  app.use('*', requestId({ logger }), accessLog(), drainGate({ lifecycle, metrics }));
  app.route('/', healthRoute({ lifecycle }));
  app.route('/', metricsRoute({ metrics }));
  // The page and its assets are public; the data it shows comes from /v1/variants (key-protected).
  app.route('/', dashboardRoute());
  if (deps.apiKey !== undefined) app.use('/v1/*', bearerAuth({ apiKey: deps.apiKey }));
  app.use('/v1/*', bodyLimit({ maxBytes: deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES }));
  app.use('/v1/*', admission({ lifecycle }));
  const experiments = deps.experiments ?? experimentRouterFor(lifecycle, metrics);
  const servingDeps = { metrics, shutdownSignal: lifecycle.cancelSignal, experiments };
  app.route('/', modelsRoute({ experiments }));
  app.route('/', variantsRoute({ metrics, fidelity: deps.fidelity }));
  let statistics = deps.experimentStatistics;
  if (statistics === undefined) {
    statistics = new ExperimentStatistics({ router: experiments });
    feedExperimentStatistics(metrics, statistics);
  }
  app.route(
    '/',
    experimentsRoute({ experiments, statistics, experimentsFileStatus: deps.experimentsFileStatus }),
  );
  app.route('/', completionsRoute(servingDeps));
  app.route('/', chatRoute(servingDeps));

  app.notFound((c) => {
    const problem = new HttpProblem(404, `no route for ${c.req.method} ${c.req.path}`, {
      type: 'invalid_request_error',
      code: 'not_found',
    });
    return c.json(errorBody(problem), 404);
  });

  // The one error door: every thrown error becomes OpenAI's {"error": {...}} with its status.
  app.onError((error, c) => {
    const problem = problemOf(error);
    const log = c.get('logger') ?? logger;
    if (problem.isServerFault) log.error({ err: error, path: c.req.path }, 'request failed');
    // One counter per request: a finish already counted (shutdown cancel, engine fault) is not also
    // a rejection; a client that left before its request reached the engine is an abort, as one
    // that leaves mid-generation is (vLLM counts both); everything else was refused.
    if (c.req.path.startsWith('/v1/') && !problem.isFinishCounted) {
      if (problem.code === 'cancelled') metrics.observeAbortedBeforeStart({ transport: 'http' });
      else metrics.observeRejected({ transport: 'http', reason: problem.code });
    }
    if (problem.retryAfterSeconds !== undefined) c.header('Retry-After', String(problem.retryAfterSeconds));
    return c.json(errorBody(problem), problem.status as 400);
  });
  return app;
}
