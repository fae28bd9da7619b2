/**
 * Drift of a sampled quantity (RSS, open fds) over a soak. The first minutes are left out: heaps,
 * JIT code and allocator arenas grow to their working size there, which is not a leak. What is left
 * is summarised three ways: end − reference (what an operator reads off a graph); the means of the
 * first and last minute from the reference on (RSS saw-tooths with garbage collection, so single
 * samples can sit anywhere in a swing of tens of MiB); and a least-squares slope over every sample
 * from the reference on.
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
  /** Length of the two averaging windows: a minute, or half the span when that is shorter. */
  windowS: number;
  /** Mean of the samples in [fromS, fromS + windowS). */
  fromMean: number;
  /** Mean of the samples in (toS − windowS, toS]. */
  toMean: number;
  /** Range of the samples from the reference on (RSS swings with garbage collection). */
  min: number;
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
  const windowS = Math.min(60, (last.atS - from.atS) / 2);
  const mean = (points: readonly { value: number }[]): number =>
    points.reduce((sum, p) => sum + p.value, 0) / points.length;
  return {
    fromS: from.atS,
    from: from.value,
    toS: last.atS,
    to: last.value,
    change,
    changePct: from.value === 0 ? null : (change / from.value) * 100,
    changePerHour: spanH > 0 ? change / spanH : 0,
    slopePerHour: leastSquaresSlope(window) * 3600,
    windowS,
    // Each window holds at least its end sample, so neither mean divides by zero.
    fromMean: mean(window.filter((s) => s.atS < from.atS + windowS || s === from)),
    toMean: mean(window.filter((s) => s.atS > last.atS - windowS || s === last)),
    min: Math.min(...window.map((s) => s.value)),
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

/** Means of the valued samples in consecutive buckets of `bucketS` seconds from 0 (empty ones left out). */
export function bucketMeans(
  series: readonly TimedValue[],
  bucketS: number,
): { startS: number; mean: number }[] {
  const buckets = new Map<number, { sum: number; n: number }>();
  for (const s of series) {
    if (s.value === null) continue;
    const key = Math.floor(s.atS / bucketS);
    const b = buckets.get(key) ?? { sum: 0, n: 0 };
    b.sum += s.value;
    b.n++;
    buckets.set(key, b);
  }
  return [...buckets.entries()]
    .sort(([a], [b]) => a - b)
    .map(([key, b]) => ({ startS: key * bucketS, mean: b.sum / b.n }));
}
