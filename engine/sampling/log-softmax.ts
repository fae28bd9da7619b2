/** log-softmax of one logits row, in float64 accumulation; returns a new array. */
export function logSoftmax(logits: Float32Array): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const logZ = max + Math.log(sum);
  const out = new Float32Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - logZ;
  return out;
}

/** log P(token) under softmax(logits), without materialising the whole row. */
export function tokenLogprob(logits: Float32Array, tokenId: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return logits[tokenId]! - max - Math.log(sum);
}

export function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Indices of the k largest entries, largest first. O(V·k) for the small k that logprobs use. */
export function topKIndices(row: Float32Array, k: number): number[] {
  const picked: number[] = [];
  for (let i = 0; i < row.length; i++) {
    if (picked.length < k) {
      picked.push(i);
      picked.sort((a, b) => row[b]! - row[a]!);
    } else if (row[i]! > row[picked[k - 1]!]!) {
      picked[k - 1] = i;
      picked.sort((a, b) => row[b]! - row[a]!);
    }
  }
  return picked;
}
