import { expect, describe as group, it } from 'vitest';
import { describe, percentile, statAtPercentile } from './stats.ts';

group('percentile (numpy linear interpolation)', () => {
  it('is exact on known arrays', () => {
    const oneToHundred = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(oneToHundred, 50)).toBe(50.5);
    expect(percentile(oneToHundred, 90)).toBeCloseTo(90.1, 12);
    expect(percentile(oneToHundred, 95)).toBeCloseTo(95.05, 12);
    expect(percentile(oneToHundred, 99)).toBeCloseTo(99.01, 12);
    expect(percentile(oneToHundred, 0)).toBe(1);
    expect(percentile(oneToHundred, 100)).toBe(100);
    // Unsorted input, interpolation between two neighbours: rank 0.99 × 4 = 3.96.
    expect(percentile([40, 10, 30, 20, 50], 99)).toBeCloseTo(49.6, 12);
    expect(percentile([40, 10, 30, 20, 50], 50)).toBe(30);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
  });

  it('rejects percentiles outside [0, 100]', () => {
    expect(() => percentile([1], 101)).toThrow(RangeError);
    expect(() => percentile([1], -1)).toThrow(RangeError);
  });

  it('summarises with mean, population std and the reported percentiles', () => {
    const stats = describe([2, 4, 4, 4, 5, 5, 7, 9]);
    expect(stats.count).toBe(8);
    expect(stats.mean).toBe(5);
    expect(stats.std).toBe(2); // the textbook population-std example
    expect(stats.min).toBe(2);
    expect(stats.max).toBe(9);
    expect(stats.p50).toBe(4.5);
    expect(statAtPercentile(stats, 99)).toBe(stats.p99);
    expect(stats.p99).toBeCloseTo(8.86, 12);
    expect(() => statAtPercentile(stats, 42)).toThrow(/one of 50, 90, 95, 99/);
    expect(describe([]).count).toBe(0);
    expect(describe([]).p99).toBeNaN();
  });
});
