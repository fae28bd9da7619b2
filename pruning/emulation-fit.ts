/**
 * Fits what replaces a dropped sublayer (Siddiqui et al.'s "emulated updates"), from calibration
 * activations of the full model:
 *
 *   bias:      x ↦ x + b,                 b = mean over tokens of the update y = x_out − x_in
 *   low-rank:  x ↦ x + b + (n · down) · up,  n = rmsNorm(x_in) with the sublayer's own norm weight
 *
 * The low-rank map is reduced-rank ridge regression: centre n and y, solve the full ridge problem
 * W = (Cnn + λI)⁻¹ Cny, then keep the rank-r subspace that carries most of the fitted update's
 * variance — the top-r eigenvectors V_r of Wᵀ Cnn W (the covariance of the fitted values n·W). So
 * down = W V_r [dim, r], up = V_rᵀ [r, dim] and b = ȳ − n̄ · down · up (the intercept). λ is
 * `ridge` × mean eigenvalue of Cnn (trace / dim), so one setting fits any activation scale.
 *
 * Everything is accumulated as sufficient statistics (sums, Σ nnᵀ, Σ nyᵀ) in float64, so memory is
 * O(dim²) whatever the number of calibration tokens.
 */
import { choleskySolve, matMul, symmetricEigen, transpose } from './linalg.ts';

export const DEFAULT_RIDGE = 1e-3;

/** Running moments of (normed input, update) pairs of one sublayer. */
export class UpdateStatistics {
  readonly dim: number;
  readonly withRegression: boolean;
  count = 0;
  readonly sumY: Float64Array; // [dim]
  readonly sumX: Float64Array; // [dim]
  readonly sumXX: Float64Array; // [dim, dim]
  readonly sumXY: Float64Array; // [dim, dim]
  sumYY = 0;

  /** Without regression only the update's mean is tracked (all a bias fit needs). */
  constructor(dim: number, withRegression: boolean) {
    this.dim = dim;
    this.withRegression = withRegression;
    this.sumY = new Float64Array(dim);
    this.sumX = new Float64Array(withRegression ? dim : 0);
    this.sumXX = new Float64Array(withRegression ? dim * dim : 0);
    this.sumXY = new Float64Array(withRegression ? dim * dim : 0);
  }

  /** One token: x = normed sublayer input [dim], y = its update [dim]. */
  add(x: ArrayLike<number>, y: ArrayLike<number>): void {
    const d = this.dim;
    this.count++;
    for (let j = 0; j < d; j++) {
      this.sumY[j] += y[j]!;
      this.sumYY += y[j]! * y[j]!;
    }
    if (!this.withRegression) return;
    for (let i = 0; i < d; i++) {
      const xi = x[i]!;
      this.sumX[i] += xi;
      const row = i * d;
      for (let j = 0; j < d; j++) {
        this.sumXX[row + j] += xi * x[j]!;
        this.sumXY[row + j] += xi * y[j]!;
      }
    }
  }
}

/**
 * One token of a sublayer's calibration pair: its input x_in normed with the sublayer's own RMSNorm
 * weight (what a low-rank map reads) and its update x_out − x_in. `scratch` holds two [dim] buffers
 * reused across tokens.
 */
export function addResidualPair(
  stats: UpdateStatistics,
  xIn: ArrayLike<number>,
  xOut: ArrayLike<number>,
  normWeight: ArrayLike<number>,
  eps: number,
  scratch: { normed: Float64Array; delta: Float64Array },
): void {
  const dim = stats.dim;
  let sumSquares = 0;
  for (let d = 0; d < dim; d++) sumSquares += xIn[d]! * xIn[d]!;
  const scale = 1 / Math.sqrt(sumSquares / dim + eps);
  for (let d = 0; d < dim; d++) {
    scratch.normed[d] = xIn[d]! * scale * normWeight[d]!;
    scratch.delta[d] = xOut[d]! - xIn[d]!;
  }
  stats.add(scratch.normed, scratch.delta);
}

/**
 * b = mean update ȳ, or with `ridge` λ > 0 the minimiser of mean‖y − b‖² + λ‖b‖², i.e. ȳ / (1 + λ):
 * shrunk towards a plain drop (b = 0), since the MSE-best constant is not always the loss-best one.
 */
export function fitBias(stats: UpdateStatistics, ridge = 0): Float32Array {
  if (stats.count === 0) throw new RangeError('no calibration tokens to fit a bias on');
  if (!(ridge >= 0)) throw new RangeError(`ridge ${ridge} must be ≥ 0`);
  return Float32Array.from(stats.sumY, (s) => s / stats.count / (1 + ridge));
}

export interface LowRankFit {
  rank: number;
  bias: Float32Array; // [dim]
  down: Float32Array; // [dim, rank]
  up: Float32Array; // [rank, dim]
  /** 1 − E‖y − ŷ‖² / E‖y − ȳ‖² on the calibration tokens (1 = exact). */
  explainedVariance: number;
}

export function fitLowRank(stats: UpdateStatistics, rank: number, ridge = DEFAULT_RIDGE): LowRankFit {
  const d = stats.dim;
  if (!stats.withRegression) throw new RangeError('statistics were gathered without regression moments');
  if (!(Number.isInteger(rank) && rank >= 1 && rank <= d))
    throw new RangeError(`rank ${rank} must be in 1..${d}`);
  if (stats.count < 2) throw new RangeError('a low-rank fit needs at least 2 calibration tokens');
  const n = stats.count;
  const meanX = Float64Array.from(stats.sumX, (s) => s / n);
  const meanY = Float64Array.from(stats.sumY, (s) => s / n);
  // Centred covariances Cnn = E[xxᵀ] − x̄x̄ᵀ, Cny = E[xyᵀ] − x̄ȳᵀ.
  const cxx = new Float64Array(d * d);
  const cxy = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      cxx[i * d + j] = stats.sumXX[i * d + j]! / n - meanX[i]! * meanX[j]!;
      cxy[i * d + j] = stats.sumXY[i * d + j]! / n - meanX[i]! * meanY[j]!;
    }
  }
  let trace = 0;
  for (let i = 0; i < d; i++) trace += cxx[i * d + i]!;
  const lambda = ridge * Math.max(trace / d, Number.MIN_VALUE);
  const regularised = Float64Array.from(cxx);
  for (let i = 0; i < d; i++) regularised[i * d + i] += lambda;
  const w = choleskySolve(regularised, cxy, d, d); // [dim_in, dim_out]
  const fittedCov = matMul(transpose(w, d, d), matMul(cxx, w, d, d, d), d, d, d); // Wᵀ Cnn W
  const { vectors } = symmetricEigen(fittedCov, d);
  const vr = new Float64Array(d * rank); // [dim, r]: top-r eigenvectors as columns
  for (let i = 0; i < d; i++) for (let j = 0; j < rank; j++) vr[i * rank + j] = vectors[i * d + j]!;
  const down = matMul(w, vr, d, d, rank); // [dim, r]
  const up = transpose(vr, d, rank); // [r, dim]
  const m = matMul(down, up, d, rank, d); // the fitted linear map [dim_in, dim_out]
  const xm = matMul(meanX, m, 1, d, d);
  const bias = Float64Array.from(meanY, (y, j) => y - xm[j]!);
  return {
    rank,
    bias: Float32Array.from(bias),
    down: Float32Array.from(down),
    up: Float32Array.from(up),
    explainedVariance: explainedVariance(stats, m, bias, meanY),
  };
}

/**
 * 1 − residual / total variance of the prediction ŷ = b + x·M, from the moments alone:
 * E‖y − ŷ‖² = E‖y‖² − 2 E[y·ŷ] + E‖ŷ‖², with E[y·ŷ] = b·ȳ + tr(Mᵀ E[xyᵀ]) and
 * E‖ŷ‖² = ‖b‖² + 2 b·(x̄M) + tr(Mᵀ E[xxᵀ] M).
 */
function explainedVariance(
  stats: UpdateStatistics,
  m: Float64Array,
  bias: Float64Array,
  meanY: Float64Array,
): number {
  const d = stats.dim;
  const n = stats.count;
  const eyy = stats.sumYY / n;
  let total = eyy;
  for (let j = 0; j < d; j++) total -= meanY[j]! * meanY[j]!;
  const exx = Float64Array.from(stats.sumXX, (s) => s / n);
  const exy = Float64Array.from(stats.sumXY, (s) => s / n);
  const meanX = Float64Array.from(stats.sumX, (s) => s / n);
  let yDotPrediction = 0;
  let predictionSquared = 0;
  for (let j = 0; j < d; j++) yDotPrediction += bias[j]! * meanY[j]!;
  for (let i = 0; i < d * d; i++) yDotPrediction += m[i]! * exy[i]!; // tr(Mᵀ E[xyᵀ]) = Σ M∘E[xyᵀ]
  const xm = matMul(meanX, m, 1, d, d);
  const exxm = matMul(exx, m, d, d, d);
  for (let j = 0; j < d; j++) predictionSquared += bias[j]! * bias[j]! + 2 * bias[j]! * xm[j]!;
  for (let i = 0; i < d * d; i++) predictionSquared += m[i]! * exxm[i]!;
  const residual = Math.max(0, eyy - 2 * yDotPrediction + predictionSquared);
  return total > 0 ? 1 - residual / total : 1;
}
