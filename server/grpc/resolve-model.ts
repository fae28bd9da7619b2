import type * as grpc from '@grpc/grpc-js';
import type { EngineClient } from '../../engine/client.ts';
import { DropserveError } from '../../engine/errors.ts';
import type { ExperimentRouter } from '../experiments/experiment-router.ts';

/** Call metadata naming the end user, for sticky A/B assignment (HTTP: the OpenAI `user` field). */
export const USER_METADATA = 'x-dropserve-user';
/** Initial response metadata naming the variant that serves a Generate/Complete call. */
export const VARIANT_METADATA = 'x-dropserve-variant';

/**
 * The served variant a request names: a variant id from engine.variants(), or the full model when
 * empty. An unknown name is DS_NOT_FOUND listing what is served, so a typo is fixable from the error.
 */
export function resolveVariant(
  model: string,
  engine: Pick<EngineClient, 'model' | 'variants'>,
  experimentNames: readonly string[] = [],
): string {
  if (model === '') return engine.model.name;
  const ids = engine.variants().map((v) => v.id);
  if (ids.includes(model)) return model;
  const available = [...ids, ...experimentNames].join(', ');
  throw new DropserveError('DS_NOT_FOUND', `model "${model}" is not served; available: ${available}`, {
    param: 'model',
  });
}

/**
 * The variant a generation call runs on: `model` itself, or, when it names an A/B experiment, the
 * arm the router assigns — sticky per `x-dropserve-user` metadata, random without it.
 */
export function routeModel(
  model: string,
  engine: Pick<EngineClient, 'model' | 'variants'>,
  experiments: ExperimentRouter | undefined,
  metadata: grpc.Metadata,
): string {
  if (experiments?.has(model)) {
    const user = metadata.get(USER_METADATA)[0];
    return experiments.assign(model, typeof user === 'string' && user !== '' ? user : undefined);
  }
  return resolveVariant(
    model,
    engine,
    experiments?.list().map((e) => e.name),
  );
}
