import { Hono } from 'hono';
import type { ServerLifecycle } from '../../lifecycle.ts';
import type { AppEnv } from '../env.ts';
import { errorBody, HttpProblem, modelLoading, shuttingDown } from '../errors.ts';

/**
 * GET /health: 200 {"status":"ok"} when requests will be served; 503 in OpenAI's error shape while
 * the model loads (the server listens before loading), after a failed load, while draining, or when
 * the engine has stopped. Never behind the API key: load balancers probe it.
 */
export function healthRoute({ lifecycle }: { lifecycle: ServerLifecycle }): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/health', (c) => {
    if (lifecycle.isServing) return c.json({ status: 'ok' });
    const problem = problemOfState(lifecycle);
    if (problem.retryAfterSeconds !== undefined) c.header('Retry-After', String(problem.retryAfterSeconds));
    return c.json(errorBody(problem), 503);
  });
}

function problemOfState(lifecycle: ServerLifecycle): HttpProblem {
  switch (lifecycle.state) {
    case 'loading':
      return modelLoading();
    case 'failed':
      return new HttpProblem(503, `the model failed to load: ${(lifecycle.loadError as Error)?.message}`, {
        type: 'service_unavailable_error',
        code: 'model_load_failed',
      });
    case 'ready':
      return new HttpProblem(503, 'the engine is not running', {
        type: 'service_unavailable_error',
        code: 'engine_stopped',
      });
    default:
      return shuttingDown();
  }
}
