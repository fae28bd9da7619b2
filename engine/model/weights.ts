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

export interface ModelWeights {
  tokenEmbedding: Float32Array; // [vocabSize, dim]
  layers: LayerWeights[];
  finalNorm: Float32Array; // [dim]
  /** [vocabSize, dim]; the very same array as tokenEmbedding when embeddings are tied. */
  lmHead: Float32Array;
}

/** Number of float32 parameters, counting a tied lm_head once. */
export function countParameters(config: ModelConfig, weights: ModelWeights): number {
  let n = weights.tokenEmbedding.length + weights.finalNorm.length;
  if (weights.lmHead !== weights.tokenEmbedding) n += weights.lmHead.length;
  for (const layer of weights.layers) {
    for (const t of Object.values(layer)) if (t) n += (t as Float32Array).length;
  }
  void config;
  return n;
}
