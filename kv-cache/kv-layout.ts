/** What one variant's KV cache holds per token: K and V rows of its kept attention layers. */
export interface KvLayout {
  /** Attention layers that keep KV (not dropped), ascending. */
  keptLayers: number[];
  numKvHeads: number;
  headDim: number;
  /** Longest sequence (prompt + generated) the model supports. */
  maxSeqLen: number;
  /** Element type of the stored K/V (fp16 only on the device, `--kv-dtype fp16`); fp32 when absent. */
  dtype?: 'fp32' | 'fp16';
}

export const BYTES_PER_ELEMENT = Float32Array.BYTES_PER_ELEMENT;

/** Tokens per KV block unless `--kv-block-tokens` says otherwise (vLLM's default too). */
export const DEFAULT_KV_BLOCK_TOKENS = 16;

/** 2 (K and V) × kept layers × kv heads × head dim × bytes per element (4, or 2 for fp16). */
export function kvBytesPerToken(layout: KvLayout): number {
  const bytesPerElement = layout.dtype === 'fp16' ? 2 : BYTES_PER_ELEMENT;
  return 2 * layout.keptLayers.length * layout.numKvHeads * layout.headDim * bytesPerElement;
}

/** Tokens rounded up to whole blocks. */
export function blockAligned(tokens: number, blockTokens: number): number {
  return Math.ceil(tokens / blockTokens) * blockTokens;
}

/**
 * Bytes of a batch-major arena of `rows` rows padded to the longest, `tokens` positions: what the GQA
 * op's one past tensor per batch costs. The scheduler plans with it; pools allocate by it.
 */
export function kvShapeBytes(
  bytesPerToken: number,
  rows: number,
  tokens: number,
  blockTokens: number,
): number {
  return rows * blockAligned(tokens, blockTokens) * bytesPerToken;
}
