/**
 * Drift of a sampled quantity (RSS, open fds) over a soak. The first minutes are left out: heaps,
 * JIT code and allocator arenas grow to their working size there, which is not a leak. What is left
 * is summarised two ways: end − reference (what an operator reads off a graph), and a least-squares
 * slope over every sample from the reference on (less swayed by one noisy last sample).
 */

export interface TimedValue {
  /** Seconds since the soak started. */
  atS: number;
  value: number | null;
}

export interface Drift {
  /** The reference sample: the first at or after the requested time. */
  fromS: number;
  from: number;
  toS: number;
  to: number;
  change: number;
  /** change ÷ from × 100; null when from is 0. */
  changePct: number | null;
  /** change scaled to one hour of the same trend. */
  changePerHour: number;
  /** Least-squares slope per hour over the samples from the reference on. */
  slopePerHour: number;
  max: number;
  /** Samples from the reference on. */
  samples: number;
  /** The run ended before the requested reference time; the earliest sample was used instead. */
  isReferenceEarly: boolean;
}

/**
 * Drift from the first sample at or after `fromS` to the last sample. Null with fewer than two
 * samples carrying a value.
 */
export function computeDrift(series: readonly TimedValue[], fromS: number): Drift | null {
  const valued = series.filter((s): s is { atS: number; value: number } => s.value !== null);
  if (valued.length < 2) return null;
  const last = valued[valued.length - 1]!;
  let start = valued.findIndex((s) => s.atS >= fromS);
  const isReferenceEarly = start < 0 || start === valued.length - 1;
  if (isReferenceEarly) start = 0;
  const window = valued.slice(start);
  const from = window[0]!;
  const change = last.value - from.value;
  const spanH = (last.atS - from.atS) / 3600;
  return {
    fromS: from.atS,
    from: from.value,
    toS: last.atS,
    to: last.value,
    change,
    changePct: from.value === 0 ? null : (change / from.value) * 100,
    changePerHour: spanH > 0 ? change / spanH : 0,
    slopePerHour: leastSquaresSlope(window) * 3600,
    max: Math.max(...window.map((s) => s.value)),
    samples: window.length,
    isReferenceEarly,
  };
}

/** Slope of the least-squares line through (atS, value), per second; 0 for fewer than two times. */
export function leastSquaresSlope(points: readonly { atS: number; value: number }[]): number {
  const n = points.length;
  if (n < 2) return 0;
  const meanT = points.reduce((s, p) => s + p.atS, 0) / n;
  const meanV = points.reduce((s, p) => s + p.value, 0) / n;
  let covariance = 0;
  let variance = 0;
  for (const p of points) {
    covariance += (p.atS - meanT) * (p.value - meanV);
    variance += (p.atS - meanT) ** 2;
  }
  return variance === 0 ? 0 : covariance / variance;
}
