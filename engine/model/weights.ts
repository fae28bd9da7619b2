import type { QuantizedMatrix } from '../quant/quantized-matrix.ts';
import type { ModelConfig } from './config.ts';

/**
 * All weights as float32, matrices row-major (out, in) as in both llama2.c and PyTorch Linear.
 * bf16/fp16 sources are converted at load.
 */
export interface LayerWeights {
  attnNorm: Float32Array; // [dim]
  wq: Float32Array; // [qDim, dim]
  wk: Float32Array; // [kvDim, dim]
  wv: Float32Array; // [kvDim, dim]
  wo: Float32Array; // [dim, qDim]
  bq?: Float32Array; // [qDim]   (Qwen2)
  bk?: Float32Array; // [kvDim]  (Qwen2)
  bv?: Float32Array; // [kvDim]  (Qwen2)
  mlpNorm: Float32Array; // [dim]
  wGate: Float32Array; // [hiddenDim, dim]  (llama2.c w1)
  wDown: Float32Array; // [dim, hiddenDim]  (llama2.c w2)
  wUp: Float32Array; // [hiddenDim, dim]    (llama2.c w3)
}

/**
 * Linear layers of one layer that the graph multiplies as MatMulNBits instead of float32
 * (engine/quant/); the session reads only these. The LayerWeights float32 field of the same name
 * keeps the values they were quantized from (a loader that starts from quantized data, e.g. GGUF
 * Q4_0, puts dequantize(it) there); engine/quant/quantize-weights.ts `dequantizedWeights` gives the
 * float32 weights the session actually computes with.
 */
export type QuantizedLinears = Partial<Record<LinearWeightName, QuantizedMatrix>>;

/** The linear projections of a layer: the matrices `--weights int8|int4` quantizes. */
export const LINEAR_WEIGHT_NAMES = ['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const;
export type LinearWeightName = (typeof LINEAR_WEIGHT_NAMES)[number];

/** What the graph's linear layers are stored as (`--weights`); embeddings and norms stay float32. */
export type WeightFormat = 'fp32' | 'fp16' | 'int8' | 'int4';

export interface ModelWeights {
  tokenEmbedding: Float32Array; // [vocabSize, dim]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [dim]
  /** [vocabSize, dim]; the very same array as tokenEmbedding when embeddings are tied. */
  lmHead: Float32Array;
  /** lm_head as MatMulNBits (`--quantize-lm-head`); never the embedding table, which stays float32. */
  lmHeadQuantized?: QuantizedMatrix;
  /** lm_head stored as fp16 (`--weights fp16 --quantize-lm-head`). */
  lmHeadFp16?: boolean;
  /** Per layer (same index as `layers`), the linears held as MatMulNBits; absent = all float32. */
  quantizedLayers?: QuantizedLinears[];
  /**
   * Storage of the linear layers in the graph; absent = fp32. 'fp16' keeps float32 values here that
   * are exactly representable in fp16 and stores them as fp16 initializers.
   */
  format?: WeightFormat;
}

/** Number of float32 parameters, counting a tied lm_head once. */
export function countParameters(config: ModelConfig, weights: ModelWeights): number {
  let n = weights.tokenEmbedding.length + weights.finalNorm.length;
  if (weights.lmHead !== weights.tokenEmbedding) n += weights.lmHead.length;
  for (const layer of weights.layers) {
    for (const t of Object.values(layer)) if (t instanceof Float32Array) n += t.length;
  }
  void config;
  return n;
}
