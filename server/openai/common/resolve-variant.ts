import type { EngineClient, VariantInfo } from '../../../engine/client.ts';
import { HttpProblem } from '../../http/errors.ts';

/** The variant a request's `model` names; 404 listing what is served otherwise. */
export function resolveVariant(engine: EngineClient, model: string): VariantInfo {
  const variants = engine.variants();
  const found = variants.find((v) => v.id === model);
  if (found) return found;
  const available = variants.map((v) => v.id).join(', ');
  throw new HttpProblem(404, `The model \`${model}\` does not exist. Available models: ${available}`, {
    type: 'invalid_request_error',
    code: 'model_not_found',
    param: 'model',
  });
}
