import { softmaxInPlace } from './ops.ts';

/**
 * Causal attention of one query position over every cached position up to and including its own
 * (the caller appends this position's K/V first). Query head h reads KV head ⌊h / kvGroup⌋: the
 * GQA head sharing of HF `repeat_kv` and llama2.c `h / kv_mul`.
 */
export function attendOne(
  query: Float64Array, // [numHeads * headDim], after RoPE
  keys: readonly Float64Array[], // per cached position: [numKvHeads * headDim], after RoPE
  values: readonly Float64Array[], // per cached position: [numKvHeads * headDim]
  numHeads: number,
  numKvHeads: number,
  headDim: number,
): Float64Array {
  const kvGroup = numHeads / numKvHeads;
  const scale = 1 / Math.sqrt(headDim);
  const out = new Float64Array(numHeads * headDim);
  const scores = new Float64Array(keys.length);
  for (let h = 0; h < numHeads; h++) {
    const qBase = h * headDim;
    const kvBase = Math.floor(h / kvGroup) * headDim;
    for (let t = 0; t < keys.length; t++) {
      const key = keys[t]!;
      let dot = 0;
      for (let d = 0; d < headDim; d++) dot += query[qBase + d]! * key[kvBase + d]!;
      scores[t] = dot * scale;
    }
    softmaxInPlace(scores);
    for (let t = 0; t < values.length; t++) {
      const value = values[t]!;
      const weight = scores[t]!;
      for (let d = 0; d < headDim; d++) out[qBase + d] += weight * value[kvBase + d]!;
    }
  }
  return out;
}
