import { Hono } from 'hono';
import type { AppEnv } from '../../http/env.ts';
import { sseResponse } from '../../http/sse.ts';
import { parseRequest } from '../common/parse-request.ts';
import { readJsonBody } from '../common/read-json.ts';
import { type ServingDeps, servingContextOf } from '../common/route-context.ts';
import { chatRequestSchema, UNSUPPORTED_CHAT_PARAMS } from './schema.ts';
import { serveChatCompletion } from './serving.ts';

/** POST /v1/chat/completions */
export function chatRoute(deps: ServingDeps): Hono<AppEnv> {
  return new Hono<AppEnv>().post('/v1/chat/completions', async (c) => {
    const body = parseRequest(chatRequestSchema, readJsonBody(c), UNSUPPORTED_CHAT_PARAMS);
    const result = await serveChatCompletion(servingContextOf(c, deps), body);
    return result.kind === 'json' ? c.json(result.body) : sseResponse(c, result.chunks);
  });
}
