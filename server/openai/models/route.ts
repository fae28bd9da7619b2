import { Hono } from 'hono';
import type { ExperimentRouter } from '../../experiments/experiment-router.ts';
import type { AppEnv } from '../../http/env.ts';
import { resolveVariant } from '../common/resolve-variant.ts';
import { experimentCardOf, listModels, modelCardOf } from './serving.ts';

/**
 * GET /v1/models (every variant is a model, and so is every A/B experiment) and GET /v1/models/{id}
 * (ids may contain ':' and '/').
 */
export function modelsRoute(deps: { experiments?: ExperimentRouter } = {}): Hono<AppEnv> {
  const { experiments } = deps;
  return new Hono<AppEnv>()
    .get('/v1/models', (c) => c.json(listModels(c.get('engine'), experiments)))
    .get('/v1/models/:id{.+}', (c) => {
      const engine = c.get('engine');
      const id = c.req.param('id');
      const experiment = experiments?.get(id);
      if (experiment) return c.json(experimentCardOf(engine, experiment));
      const names = experiments?.list().map((e) => e.name);
      return c.json(modelCardOf(engine, resolveVariant(engine, id, names)));
    });
}
