/** Hyperparameters of a Llama-family decoder, whatever format it was loaded from. */
export interface ModelConfig {
  /** Source architecture; decides only loader details (Qwen2 has q/k/v bias). */
  architecture: 'llama' | 'mistral' | 'qwen2';
  /** Residual stream width (HF hidden_size, llama2.c dim). */
  dim: number;
  /** MLP intermediate width (HF intermediate_size, llama2.c hidden_dim). */
  hiddenDim: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** Per-head width; HF `head_dim` may differ from dim / numHeads. */
  headDim: number;
  vocabSize: number;
  /** Context length: KV rows a sequence may hold (prompt + generated). */
  maxSeqLen: number;
  rmsNormEps: number;
  ropeTheta: number;
  /**
   * llama2.c rotates adjacent pairs (x[2i], x[2i+1]); Hugging Face Llama rotates halves
   * (x[i], x[i + headDim/2]). The same weights give different models under the two conventions.
   */
  ropeInterleaved: boolean;
  /** Llama 3.x frequency scaling (`rope_scaling.rope_type == "llama3"`). */
  ropeScaling?: Llama3RopeScaling;
  /** Qwen2 adds biases to the q/k/v projections. */
  hasQkvBias: boolean;
  tieWordEmbeddings: boolean;
  bosTokenId: number;
  eosTokenIds: number[];
}

export interface Llama3RopeScaling {
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** Sizes derived from a config, computed in one place. */
export interface DerivedSizes {
  /** numHeads * headDim: width of the q projection output. */
  qDim: number;
  /** numKvHeads * headDim: width of each of the k and v projection outputs. */
  kvDim: number;
  /** Query heads per KV head (GQA group size). */
  kvGroup: number;
}

export function derivedSizes(config: ModelConfig): DerivedSizes {
  return {
    qDim: config.numHeads * config.headDim,
    kvDim: config.numKvHeads * config.headDim,
    kvGroup: config.numHeads / config.numKvHeads,
  };
}

/**
 * Inverse frequencies of RoPE, one per rotated pair: θ^(-2i/headDim), with Llama 3 scaling applied
 * when configured. Shared by the reference forward pass and the graph's cos/sin tables.
 */
export function ropeInverseFrequencies(config: ModelConfig): Float64Array {
  const half = config.headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = config.ropeTheta ** (-(2 * i) / config.headDim);
  const s = config.ropeScaling;
  if (!s) return inv;
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const wavelen = (2 * Math.PI) / inv[i]!;
    if (wavelen > lowFreqWavelen) {
      inv[i] = inv[i]! / s.factor;
    } else if (wavelen >= highFreqWavelen) {
      const smooth =
        (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      inv[i] = (1 - smooth) * (inv[i]! / s.factor) + smooth * inv[i]!;
    }
  }
  return inv;
}
