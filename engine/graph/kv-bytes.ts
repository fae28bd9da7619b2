import { type KvLayout, kvBytesPerToken as layoutBytesPerToken } from '../../kv-cache/kv-layout.ts';
import type { ModelConfig } from '../model/config.ts';
import type { SublayerMask } from './io.ts';

/**
 * KV cache bytes one token costs a variant, from its drop mask or list of dropped attention layers:
 * the same formula the KV pools allocate by (kv-cache/kv-layout.ts). A dropped attention layer holds
 * no KV, which is where pruning's capacity gain comes from.
 */
export function kvBytesPerToken(config: ModelConfig, dropped: SublayerMask | readonly number[]): number {
  return layoutBytesPerToken(kvLayoutOf(config, dropped));
}

/** The KV layout of a variant: the attention layers it keeps, ascending. */
export function kvLayoutOf(config: ModelConfig, dropped: SublayerMask | readonly number[]): KvLayout {
  let keptLayers: number[];
  if (isMask(dropped)) {
    if (dropped.attnKeep.length !== config.numLayers) {
      throw new RangeError(
        `mask has ${dropped.attnKeep.length} attention entries, the model ${config.numLayers} layers`,
      );
    }
    keptLayers = dropped.attnKeep.flatMap((keep, layer) => (keep ? [layer] : []));
  } else {
    for (const l of dropped) {
      if (!(Number.isInteger(l) && l >= 0 && l < config.numLayers))
        throw new RangeError(`no attention layer ${l}`);
    }
    const droppedSet = new Set(dropped);
    keptLayers = Array.from({ length: config.numLayers }, (_, layer) => layer).filter(
      (l) => !droppedSet.has(l),
    );
  }
  return {
    keptLayers,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    maxSeqLen: config.maxSeqLen,
  };
}

function isMask(value: SublayerMask | readonly number[]): value is SublayerMask {
  return !Array.isArray(value);
}
