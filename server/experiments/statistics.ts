/**
 * The statistics behind experiment reports. Everything is computed from mergeable sufficient
 * statistics (count, sum, sum of squares), never from a sample, so that replicas' reports add up to
 * exactly what one server fed all the traffic would say.
 *
 * Two kinds of interval:
 *  - a fixed-n 95% interval (delta method / normal), right when read once at a planned sample size;
 *  - a 95% confidence sequence (normal-mixture mSPRT boundary, Robbins 1970; Johari et al. 2017,
 *    Howard et al. 2021), which stays valid however often it is looked at. Verdicts and guardrails
 *    use only the confidence sequence, so watching the dashboard does not inflate false alarms.
 */

/** Count, sum and sum of squares of a stream of numbers: add, merge, mean, variance. */
export interface Moments {
  n: number;
  sum: number;
  sumSq: number;
}

export const emptyMoments = (): Moments => ({ n: 0, sum: 0, sumSq: 0 });

export function addObservation(m: Moments, x: number): void {
  m.n += 1;
  m.sum += x;
  m.sumSq += x * x;
}

export function mergeMoments(a: Moments, b: Moments): Moments {
  return { n: a.n + b.n, sum: a.sum + b.sum, sumSq: a.sumSq + b.sumSq };
}

export const meanOf = (m: Moments): number => (m.n === 0 ? Number.NaN : m.sum / m.n);

/** Unbiased sample variance; 0 below two observations (and never negative from rounding). */
export function varianceOf(m: Moments): number {
  if (m.n < 2) return 0;
  return Math.max(0, (m.sumSq - (m.sum * m.sum) / m.n) / (m.n - 1));
}

/** Two-sided 95% normal quantile. */
export const Z95 = 1.959963984540054;
/** The error level of every interval and sequence here. */
export const ALPHA = 0.05;

export interface Interval {
  estimate: number;
  low: number;
  high: number;
}

/**
 * An estimate θ̂ with variance V, and the same with the confidence-sequence width: the normal
 * mixture boundary. With mixing variance τ², the mixture likelihood ratio of H0: θ = θ0 is
 *   Λ = sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ0)² / (2 V (V + τ²)))
 * and rejecting when Λ ≥ 1/α keeps the type-I error ≤ α at every stopping time. Inverting gives
 * the half-width below. τ tunes which effect sizes the test detects fastest, never its validity.
 */
export function mixtureHalfWidth(variance: number, tau: number, alpha = ALPHA): number {
  if (variance <= 0) return 0;
  const tau2 = tau * tau;
  const scale = (variance * (variance + tau2)) / tau2;
  return Math.sqrt(scale * (2 * Math.log(1 / alpha) + Math.log((variance + tau2) / variance)));
}

export interface IntervalPair {
  /** 95% interval, valid when read once. */
  fixed: Interval;
  /** 95% confidence sequence, valid under continuous monitoring. */
  sequential: Interval;
}

/**
 * Ratio of means B/A of two independent samples, by the delta method on log(mean_B / mean_A):
 *   Var ≈ s_B² / (n_B · mean_B²) + s_A² / (n_A · mean_A²)   (Welch: each arm its own variance)
 * The interval is built on the log scale and exponentiated, so it stays positive and asymmetric.
 * Undefined (null) until both arms have two observations and positive means.
 */
export function ratioOfMeans(control: Moments, arm: Moments, tau: number): IntervalPair | null {
  if (control.n < 2 || arm.n < 2) return null;
  const mA = meanOf(control);
  const mB = meanOf(arm);
  if (!(mA > 0 && mB > 0)) return null;
  const logRatio = Math.log(mB / mA);
  const variance = varianceOf(arm) / (arm.n * mB * mB) + varianceOf(control) / (control.n * mA * mA);
  const fixedHalf = Z95 * Math.sqrt(variance);
  const seqHalf = mixtureHalfWidth(variance, tau);
  const onRatioScale = (half: number): Interval => ({
    estimate: Math.exp(logRatio),
    low: Math.exp(logRatio - half),
    high: Math.exp(logRatio + half),
  });
  return { fixed: onRatioScale(fixedHalf), sequential: onRatioScale(seqHalf) };
}

/** Mean of one sample: normal 95% interval and confidence sequence. Null before two observations. */
export function meanInterval(m: Moments, tau: number): IntervalPair | null {
  if (m.n < 2) return null;
  const mean = meanOf(m);
  const variance = varianceOf(m) / m.n;
  const fixedHalf = Z95 * Math.sqrt(variance);
  const seqHalf = mixtureHalfWidth(variance, tau);
  return {
    fixed: { estimate: mean, low: mean - fixedHalf, high: mean + fixedHalf },
    sequential: { estimate: mean, low: mean - seqHalf, high: mean + seqHalf },
  };
}

/**
 * Difference of means arm − control of two independent samples (Welch variance). When the control
 * is the full model itself for a fidelity metric, pass its known value as a constant: `control`
 * with n = 0 and `known` set.
 */
export function differenceOfMeans(
  control: Moments | { known: number },
  arm: Moments,
  tau: number,
): IntervalPair | null {
  if (arm.n < 2) return null;
  let controlMean: number;
  let controlVariance: number;
  if ('known' in control) {
    controlMean = control.known;
    controlVariance = 0;
  } else {
    if (control.n < 2) return null;
    controlMean = meanOf(control);
    controlVariance = varianceOf(control) / control.n;
  }
  const diff = meanOf(arm) - controlMean;
  const variance = varianceOf(arm) / arm.n + controlVariance;
  const fixedHalf = Z95 * Math.sqrt(variance);
  const seqHalf = mixtureHalfWidth(variance, tau);
  return {
    fixed: { estimate: diff, low: diff - fixedHalf, high: diff + fixedHalf },
    sequential: { estimate: diff, low: diff - seqHalf, high: diff + seqHalf },
  };
}

/**
 * Proportion of successes among n Bernoulli trials with a confidence sequence that needs no variance
 * estimate: a Bernoulli is sub-Gaussian with variance ≤ 1/4, so V = 1/(4n) bounds the truth and the
 * boundary stays valid from the first observation (conservative, never anti-conservative).
 */
export function proportionSequence(successes: number, n: number, tau: number): Interval | null {
  if (n < 1) return null;
  const p = successes / n;
  const half = mixtureHalfWidth(1 / (4 * n), tau);
  return { estimate: p, low: p - half, high: p + half };
}
