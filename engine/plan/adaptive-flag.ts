import { DropserveError } from '../errors.ts';
import { type AdaptiveSpec, parseAdaptiveSpec } from './adaptive-mask.ts';

/**
 * `--adaptive attn:K[,mlp:M]` of `generate` and `prune eval` (the "adaptive:" prefix the serve flag
 * needs is optional here); a DropserveError naming the flag otherwise.
 */
export function parseAdaptiveFlag(value: string, numLayers: number): AdaptiveSpec {
  const text = value.startsWith('adaptive:') ? value : `adaptive:${value}`;
  try {
    return parseAdaptiveSpec(text, numLayers)!;
  } catch (error) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--adaptive: ${(error as Error).message}`, {
      param: 'adaptive',
    });
  }
}
