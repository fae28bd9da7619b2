import type { SeededRandom } from '../../engine/model/random.ts';

/**
 * Request arrival times for open-loop load, defined as vLLM `bench serve` does: inter-arrival gaps
 * are Gamma(shape = burstiness, scale = 1 / (rate × burstiness)), so the mean gap is always 1/rate;
 * burstiness 1 is a Poisson process, < 1 is burstier, > 1 is more even, Infinity is a fixed gap.
 */
export interface ArrivalProcess {
  /** Requests per second. Infinity sends everything at once. */
  ratePerS: number;
  /** Gamma shape k. 1 = Poisson. */
  burstiness: number;
}

export function validateArrivalProcess(p: ArrivalProcess): void {
  if (!(p.ratePerS > 0)) throw new RangeError(`request rate must be > 0 req/s, found ${p.ratePerS}`);
  if (!(p.burstiness > 0)) throw new RangeError(`burstiness must be > 0, found ${p.burstiness}`);
}

/** One inter-arrival gap in milliseconds. */
export function sampleGapMs(p: ArrivalProcess, rng: SeededRandom): number {
  if (p.ratePerS === Number.POSITIVE_INFINITY) return 0;
  const meanMs = 1000 / p.ratePerS;
  if (p.burstiness === Number.POSITIVE_INFINITY) return meanMs;
  return sampleGamma(p.burstiness, meanMs / p.burstiness, rng);
}

/** `count` raw inter-arrival gaps in milliseconds (pure: same seed, same gaps). */
export function sampleGapsMs(p: ArrivalProcess, count: number, rng: SeededRandom): number[] {
  validateArrivalProcess(p);
  const gaps: number[] = [];
  for (let i = 0; i < count; i++) gaps.push(sampleGapMs(p, rng));
  return gaps;
}

/**
 * Send offsets (ms from the start) for a fixed number of requests. Like vLLM, the cumulative gaps
 * are rescaled so the last request goes out at exactly count/rate: raw Gamma sums miss that target
 * by a few percent, which would make throughput depend on the seed.
 */
export function arrivalOffsetsMs(p: ArrivalProcess, count: number, rng: SeededRandom): number[] {
  const gaps = sampleGapsMs(p, count, rng);
  const offsets: number[] = [];
  let totalMs = 0;
  for (const gap of gaps) {
    totalMs += gap;
    offsets.push(totalMs);
  }
  if (totalMs === 0 || !Number.isFinite(p.ratePerS)) return offsets;
  const scale = (count * 1000) / p.ratePerS / totalMs;
  return offsets.map((t) => t * scale);
}

/**
 * Gamma(shape, scale) by Marsaglia & Tsang (2000). For shape < 1 it samples shape + 1 and applies
 * the boost U^(1/shape), which keeps the squeeze method valid.
 */
export function sampleGamma(shape: number, scale: number, rng: SeededRandom): number {
  if (shape < 1) {
    const u = 1 - rng.next(); // (0, 1]: avoids 0^(1/shape) = 0 forever
    return sampleGamma(shape + 1, scale, rng) * u ** (1 / shape);
  }
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rng.next();
    if (u < 1 - 0.0331 * x * x * x * x) return d * v * scale;
    if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v * scale;
  }
}
