import { Hono } from 'hono';
import type { AppEnv } from '../../http/env.ts';
import { resolveVariant } from '../common/resolve-variant.ts';
import { listModels, modelCardOf } from './serving.ts';

/** GET /v1/models (every variant is a model) and GET /v1/models/{id} (ids may contain ':' and '/'). */
export function modelsRoute(): Hono<AppEnv> {
  return new Hono<AppEnv>()
    .get('/v1/models', (c) => c.json(listModels(c.get('engine'))))
    .get('/v1/models/:id{.+}', (c) => {
      const engine = c.get('engine');
      return c.json(modelCardOf(engine, resolveVariant(engine, c.req.param('id'))));
    });
}
