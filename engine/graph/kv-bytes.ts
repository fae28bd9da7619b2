import type { ModelConfig } from '../model/config.ts';
import type { SublayerMask } from './io.ts';

const BYTES_PER_ELEMENT = 4; // float32 K and V

/**
 * KV cache bytes one token costs a variant: 2 (K and V) × kept attention layers × kv heads × head_dim
 * × 4. A dropped attention layer holds no KV, which is where pruning's capacity gain comes from.
 */
export function kvBytesPerToken(config: ModelConfig, dropped: SublayerMask | readonly number[]): number {
  if (isMask(dropped) && dropped.attnKeep.length !== config.numLayers) {
    throw new RangeError(
      `mask has ${dropped.attnKeep.length} attention entries, the model ${config.numLayers} layers`,
    );
  }
  for (const l of isMask(dropped) ? [] : dropped) {
    if (!(Number.isInteger(l) && l >= 0 && l < config.numLayers))
      throw new RangeError(`no attention layer ${l}`);
  }
  const keptLayers = isMask(dropped)
    ? dropped.attnKeep.filter(Boolean).length
    : config.numLayers - new Set(dropped).size;
  return 2 * keptLayers * config.numKvHeads * config.headDim * BYTES_PER_ELEMENT;
}

function isMask(value: SublayerMask | readonly number[]): value is SublayerMask {
  return !Array.isArray(value);
}
