/** What one variant's KV cache holds per token: K and V rows of its kept attention layers. */
export interface KvLayout {
  /** Attention layers that keep KV (not dropped), ascending. */
  keptLayers: number[];
  numKvHeads: number;
  headDim: number;
  /** Longest sequence (prompt + generated) the model supports. */
  maxSeqLen: number;
}

export const BYTES_PER_ELEMENT = Float32Array.BYTES_PER_ELEMENT;

/** 2 (K and V) × kept layers × kv heads × head dim × bytes per element. */
export function kvBytesPerToken(layout: KvLayout): number {
  return 2 * layout.keptLayers.length * layout.numKvHeads * layout.headDim * BYTES_PER_ELEMENT;
}
