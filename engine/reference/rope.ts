/**
 * Rotary position embedding, in place, on a vector of `numHeads` heads of `headDim` each.
 * Pair i of a head rotates by angle position · invFreq[i]. Which two elements form pair i is the
 * convention: interleaved (llama2.c) pairs x[2i], x[2i+1]; rotate-half (Hugging Face) pairs
 * x[i], x[i + headDim/2].
 */
export function applyRope(
  vec: Float64Array, // [numHeads * headDim]
  numHeads: number,
  headDim: number,
  position: number,
  invFreq: Float64Array, // [headDim / 2]
  isInterleaved: boolean,
): void {
  const half = headDim / 2;
  for (let h = 0; h < numHeads; h++) {
    const base = h * headDim;
    for (let i = 0; i < half; i++) {
      const angle = position * invFreq[i]!;
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      const a = isInterleaved ? base + 2 * i : base + i;
      const b = isInterleaved ? a + 1 : a + half;
      const x0 = vec[a]!;
      const x1 = vec[b]!;
      vec[a] = x0 * cos - x1 * sin;
      vec[b] = x0 * sin + x1 * cos;
    }
  }
}
