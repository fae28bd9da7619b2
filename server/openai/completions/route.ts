import { Hono } from 'hono';
import type { AppEnv } from '../../http/env.ts';
import { sseResponse } from '../../http/sse.ts';
import { parseRequest } from '../common/parse-request.ts';
import { readJsonBody } from '../common/read-json.ts';
import { type ServingDeps, servingContextOf } from '../common/route-context.ts';
import { completionRequestSchema, UNSUPPORTED_COMPLETION_PARAMS } from './schema.ts';
import { serveCompletion } from './serving.ts';

/** POST /v1/completions */
export function completionsRoute(deps: ServingDeps): Hono<AppEnv> {
  return new Hono<AppEnv>().post('/v1/completions', async (c) => {
    const body = parseRequest(completionRequestSchema, readJsonBody(c), UNSUPPORTED_COMPLETION_PARAMS);
    const result = await serveCompletion(servingContextOf(c, deps), body);
    return result.kind === 'json' ? c.json(result.body) : sseResponse(c, result.chunks);
  });
}
