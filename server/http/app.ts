import { Hono } from 'hono';
import { variantsRoute } from '../admin/variants/route.ts';
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
}

/**
 * The OpenAI-compatible HTTP API. Web-standard Request → Response (the Node adapter lives in
 * start-server.ts), so tests can drive it with app.request() and no socket.
 */
export function createHttpApp(deps: HttpAppDeps): Hono<AppEnv> {
  const { lifecycle, metrics, logger } = deps;
  const app = new Hono<AppEnv>();
  app.use('*', requestId({ logger }), accessLog());
  app.route('/', healthRoute({ lifecycle }));
  app.route('/', metricsRoute({ metrics }));
  if (deps.apiKey !== undefined) app.use('/v1/*', bearerAuth({ apiKey: deps.apiKey }));
  app.use('/v1/*', bodyLimit({ maxBytes: deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES }));
  app.use('/v1/*', admission({ lifecycle }));
  const servingDeps = { metrics, shutdownSignal: lifecycle.cancelSignal };
  app.route('/', modelsRoute());
  app.route('/', variantsRoute());
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
    if (c.req.path.startsWith('/v1/')) metrics.observeRejected({ transport: 'http', reason: problem.code });
    if (problem.retryAfterSeconds !== undefined) c.header('Retry-After', String(problem.retryAfterSeconds));
    return c.json(errorBody(problem), problem.status as 400);
  });
  return app;
}
