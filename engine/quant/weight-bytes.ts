/**
 * Weight bytes a decode step reads per token, per variant: decode is bound by them. A kept sublayer
 * reads its norm and its matrices as the session stores them; a dropped one reads only its
 * emulation (if any); every token also reads its embedding row, the final norm and lm_head.
 * fp16 counts 4 bytes per value: onnxruntime folds the fp16 → float32 Cast of an initializer when it
 * creates the session, so the kernels read float32 (docs/quantization.md).
 */
import type { Emulation } from '../graph/io.ts';
import type { ModelConfig } from '../model/config.ts';
import type { LayerWeights, ModelWeights, WeightFormat } from '../model/weights.ts';
import { quantizedByteLength } from './quantized-matrix.ts';

const F32 = 4;

export interface WeightByteTable {
  format: WeightFormat;
  /** Read by every token whatever the variant: one embedding row, final norm, lm_head. */
  shared: number;
  /** Per layer, what a kept attention / MLP sublayer reads. */
  attention: number[];
  mlp: number[];
}

export function weightByteTable(config: ModelConfig, weights: ModelWeights): WeightByteTable {
  const linear = (
    layer: number,
    name: 'wq' | 'wk' | 'wv' | 'wo' | 'wGate' | 'wUp' | 'wDown',
    w: LayerWeights,
  ) => {
    const q = weights.quantizedLayers?.[layer]?.[name];
    return q ? quantizedByteLength(q) : w[name].length * F32;
  };
  const attention = weights.layers.map((w, l) => {
    const bias = (w.bq?.length ?? 0) + (w.bk?.length ?? 0) + (w.bv?.length ?? 0);
    return (
      w.attnNorm.length * F32 +
      bias * F32 +
      linear(l, 'wq', w) +
      linear(l, 'wk', w) +
      linear(l, 'wv', w) +
      linear(l, 'wo', w)
    );
  });
  const mlp = weights.layers.map(
    (w, l) => w.mlpNorm.length * F32 + linear(l, 'wGate', w) + linear(l, 'wUp', w) + linear(l, 'wDown', w),
  );
  const head = weights.lmHeadQuantized
    ? quantizedByteLength(weights.lmHeadQuantized)
    : weights.lmHead.length * F32;
  const shared = config.dim * F32 + weights.finalNorm.length * F32 + head;
  return { format: weights.format ?? 'fp32', shared, attention, mlp };
}

export interface DroppedSublayers {
  dropAttention: readonly number[];
  dropMlp: readonly number[];
  emulation?: Emulation;
}

export function weightBytesPerToken(table: WeightByteTable, spec: DroppedSublayers): number {
  const droppedAttention = new Set(spec.dropAttention);
  const droppedMlp = new Set(spec.dropMlp);
  let bytes = table.shared;
  table.attention.forEach((b, l) => {
    bytes += droppedAttention.has(l) ? emulationBytes(spec.emulation?.attention[l]) : b;
  });
  table.mlp.forEach((b, l) => {
    bytes += droppedMlp.has(l) ? emulationBytes(spec.emulation?.mlp[l]) : b;
  });
  return bytes;
}

function emulationBytes(e: Emulation['attention'][number] | undefined): number {
  if (!e) return 0;
  if (e.kind === 'bias') return e.bias.length * F32;
  return ((e.bias?.length ?? 0) + e.down.length + e.up.length) * F32;
}
