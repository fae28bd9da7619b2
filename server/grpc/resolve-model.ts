import type { EngineClient } from '../../engine/client.ts';
import { DropserveError } from '../../engine/errors.ts';

/**
 * The served variant a request names: a variant id from engine.variants(), or the full model when
 * empty. An unknown name is DS_NOT_FOUND listing what is served, so a typo is fixable from the error.
 */
export function resolveVariant(model: string, engine: Pick<EngineClient, 'model' | 'variants'>): string {
  if (model === '') return engine.model.name;
  const ids = engine.variants().map((v) => v.id);
  if (ids.includes(model)) return model;
  throw new DropserveError('DS_NOT_FOUND', `model "${model}" is not served; available: ${ids.join(', ')}`, {
    param: 'model',
  });
}
