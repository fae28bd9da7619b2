/**
 * llama2.c (and GGUF) rotate adjacent pairs of q/k features; Hugging Face Llama rotates the first
 * half of each head against the second. Moving row 2j+c of a head to row c·(headDim/2)+j turns one
 * layout into the other (the inverse of gguf-writer's interleaveRopeRows).
 */
export function halfSplitRopeRows(w: Float32Array, heads: number, headDim: number): Float32Array {
  const cols = w.length / (heads * headDim);
  const half = headDim / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      for (let c = 0; c < 2; c++) {
        const from = (h * headDim + 2 * j + c) * cols;
        const to = (h * headDim + c * half + j) * cols;
        out.set(w.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}
