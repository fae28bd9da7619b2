import type { EngineClient, VariantInfo } from '../../../engine/client.ts';
import { HttpProblem } from '../../http/errors.ts';
import type { ServingContext } from './serving-context.ts';

/** The variant a request's `model` names; 404 listing what is served otherwise. */
export function resolveVariant(
  engine: EngineClient,
  model: string,
  experimentNames: readonly string[] = [],
): VariantInfo {
  const variants = engine.variants();
  const found = variants.find((v) => v.id === model);
  if (found) return found;
  const available = [...variants.map((v) => v.id), ...experimentNames].join(', ');
  throw new HttpProblem(404, `The model \`${model}\` does not exist. Available models: ${available}`, {
    type: 'invalid_request_error',
    code: 'model_not_found',
    param: 'model',
  });
}

/**
 * The variant that serves a generation request: the one its `model` names, or, when `model` is an
 * A/B experiment, the arm the experiment router assigns (sticky per OpenAI `user`, random without
 * one). Announces the choice: the x-dropserve-variant header.
 */
export function routeVariant(ctx: ServingContext, model: string, user?: string | null): VariantInfo {
  const { experiments } = ctx;
  let name = model;
  if (experiments?.has(model)) name = experiments.assign(model, user ?? undefined);
  const variant = resolveVariant(
    ctx.engine,
    name,
    experiments?.list().map((e) => e.name),
  );
  ctx.announceVariant?.(variant.id);
  return variant;
}
