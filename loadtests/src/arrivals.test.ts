import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../engine/model/random.ts';
import { arrivalOffsetsMs, sampleGamma, sampleGapsMs } from './arrivals.ts';

const meanAndCv = (xs: number[]): { mean: number; cv: number } => {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
  return { mean, cv: Math.sqrt(variance) / mean };
};

describe('arrival process (vLLM gamma gaps)', () => {
  const n = 50_000;

  it('Poisson (burstiness 1): exponential gaps with mean 1/rate and CV 1', () => {
    const gaps = sampleGapsMs({ ratePerS: 5, burstiness: 1 }, n, new SeededRandom(42));
    const { mean, cv } = meanAndCv(gaps);
    expect(mean).toBeGreaterThan(200 * 0.98);
    expect(mean).toBeLessThan(200 * 1.02);
    expect(cv).toBeGreaterThan(0.97);
    expect(cv).toBeLessThan(1.03);
    // Memorylessness signature: P(gap > mean) = e^-1.
    const overMean = gaps.filter((g) => g > 200).length / n;
    expect(overMean).toBeGreaterThan(Math.exp(-1) - 0.01);
    expect(overMean).toBeLessThan(Math.exp(-1) + 0.01);
  });

  it('burstiness k keeps the mean at 1/rate and sets CV to 1/sqrt(k)', () => {
    for (const k of [0.25, 4]) {
      const { mean, cv } = meanAndCv(sampleGapsMs({ ratePerS: 20, burstiness: k }, n, new SeededRandom(7)));
      expect(mean).toBeGreaterThan(50 * 0.97);
      expect(mean).toBeLessThan(50 * 1.03);
      expect(cv).toBeGreaterThan((1 / Math.sqrt(k)) * 0.95);
      expect(cv).toBeLessThan((1 / Math.sqrt(k)) * 1.05);
    }
  });

  it('is a pure function of the seed, and infinite rate or burstiness are exact', () => {
    const a = sampleGapsMs({ ratePerS: 3, burstiness: 1 }, 100, new SeededRandom(1));
    const b = sampleGapsMs({ ratePerS: 3, burstiness: 1 }, 100, new SeededRandom(1));
    const c = sampleGapsMs({ ratePerS: 3, burstiness: 1 }, 100, new SeededRandom(2));
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(
      sampleGapsMs({ ratePerS: Number.POSITIVE_INFINITY, burstiness: 1 }, 3, new SeededRandom(1)),
    ).toEqual([0, 0, 0]);
    expect(
      sampleGapsMs({ ratePerS: 4, burstiness: Number.POSITIVE_INFINITY }, 2, new SeededRandom(1)),
    ).toEqual([250, 250]);
    expect(() => sampleGapsMs({ ratePerS: 0, burstiness: 1 }, 1, new SeededRandom(1))).toThrow(RangeError);
    expect(() => sampleGapsMs({ ratePerS: 1, burstiness: -1 }, 1, new SeededRandom(1))).toThrow(RangeError);
  });

  it('rescales fixed-count offsets so the last request goes out at count/rate', () => {
    const offsets = arrivalOffsetsMs({ ratePerS: 8, burstiness: 1 }, 40, new SeededRandom(5));
    expect(offsets).toHaveLength(40);
    expect(offsets[39]).toBeCloseTo(5000, 9);
    for (let i = 1; i < offsets.length; i++) expect(offsets[i]!).toBeGreaterThanOrEqual(offsets[i - 1]!);
  });

  it('samples Gamma(shape, scale) with mean shape × scale', () => {
    const rng = new SeededRandom(11);
    const xs = Array.from({ length: n }, () => sampleGamma(2.5, 3, rng));
    const { mean, cv } = meanAndCv(xs);
    expect(mean).toBeGreaterThan(7.5 * 0.98);
    expect(mean).toBeLessThan(7.5 * 1.02);
    expect(cv).toBeCloseTo(1 / Math.sqrt(2.5), 1);
    expect(Math.min(...xs)).toBeGreaterThan(0);
  });
});
