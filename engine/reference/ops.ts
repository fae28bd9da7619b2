/**
 * The reference forward pass's building blocks, named after the math. Activations are float64 so
 * the reference is a better answer than the float32 graph it checks; weights stay float32.
 */

/** rmsNorm(x) = x / sqrt(mean(x²) + eps) · weight */
export function rmsNorm(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  let sumSquares = 0;
  for (let i = 0; i < x.length; i++) sumSquares += x[i]! * x[i]!;
  const scale = 1 / Math.sqrt(sumSquares / x.length + eps);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! * scale * weight[i]!;
  return out;
}

/**
 * y = W·x (+ b) for a row-major (out, in) weight, as PyTorch Linear and llama2.c store it.
 * Most of the reference's time goes here.
 */
export function linear(
  x: Float64Array,
  weight: Float32Array,
  outDim: number,
  bias?: Float32Array,
): Float64Array {
  const inDim = x.length;
  const out = new Float64Array(outDim);
  for (let o = 0; o < outDim; o++) {
    const row = o * inDim;
    let sum = bias ? bias[o]! : 0;
    for (let i = 0; i < inDim; i++) sum += weight[row + i]! * x[i]!;
    out[o] = sum;
  }
  return out;
}

/** y = x · M for a row-major [in, out] matrix (the emulation's down/up factors are stored this way). */
export function multiplyRowMajor(x: Float64Array, matrix: Float32Array, outDim: number): Float64Array {
  const out = new Float64Array(outDim);
  for (let i = 0; i < x.length; i++) {
    const xi = x[i]!;
    const row = i * outDim;
    for (let o = 0; o < outDim; o++) out[o] += xi * matrix[row + o]!;
  }
  return out;
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** Numerically stable softmax, in place. */
export function softmaxInPlace(x: Float64Array): void {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < x.length; i++) if (x[i]! > max) max = x[i]!;
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    x[i] = Math.exp(x[i]! - max);
    sum += x[i]!;
  }
  for (let i = 0; i < x.length; i++) x[i] = x[i]! / sum;
}

/** The residual connection: x + y, into a new array. */
export function residual(x: Float64Array, y: ArrayLike<number>): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! + y[i]!;
  return out;
}
