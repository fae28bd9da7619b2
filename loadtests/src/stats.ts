/**
 * Distribution summaries with the same conventions as vLLM `bench serve` (numpy): percentiles by
 * linear interpolation between closest ranks, population standard deviation.
 */

export const REPORTED_PERCENTILES = [50, 90, 95, 99] as const;

export interface DistributionStats {
  count: number;
  mean: number;
  std: number;
  min: number;
  max: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
}

/**
 * The p-th percentile (0..100) of values sorted ascending, numpy's default "linear" method:
 * rank = p/100 × (n − 1), interpolated between the two neighbouring order statistics.
 */
export function percentileOfSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be in [0, 100], found ${p}`);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const loValue = sorted[lo]!;
  return loValue + (sorted[hi]! - loValue) * (rank - lo);
}

export function percentile(values: readonly number[], p: number): number {
  return percentileOfSorted(sortedCopy(values), p);
}

/** Summary of a sample; every field is NaN when the sample is empty (JSON writes those as null). */
export function describe(values: readonly number[]): DistributionStats {
  const sorted = sortedCopy(values);
  const n = sorted.length;
  if (n === 0) {
    const nan = Number.NaN;
    return { count: 0, mean: nan, std: nan, min: nan, max: nan, p50: nan, p90: nan, p95: nan, p99: nan };
  }
  let sum = 0;
  for (const v of sorted) sum += v;
  const mean = sum / n;
  let squares = 0;
  for (const v of sorted) squares += (v - mean) ** 2;
  return {
    count: n,
    mean,
    std: Math.sqrt(squares / n),
    min: sorted[0]!,
    max: sorted[n - 1]!,
    p50: percentileOfSorted(sorted, 50),
    p90: percentileOfSorted(sorted, 90),
    p95: percentileOfSorted(sorted, 95),
    p99: percentileOfSorted(sorted, 99),
  };
}

/** The named percentile field of a summary (only the reported ones are stored). */
export function statAtPercentile(stats: DistributionStats, p: number): number {
  switch (p) {
    case 50:
      return stats.p50;
    case 90:
      return stats.p90;
    case 95:
      return stats.p95;
    case 99:
      return stats.p99;
    default:
      throw new RangeError(`percentile must be one of ${REPORTED_PERCENTILES.join(', ')}, found ${p}`);
  }
}

function sortedCopy(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}
