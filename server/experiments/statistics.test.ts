import { describe, expect, it } from 'vitest';
import { decisions, ratioCoverage, seeded, SIMULATION_TAU as TAU, ttftSample } from './simulation.ts';
import {
  addObservation,
  emptyMoments,
  type Moments,
  meanInterval,
  meanOf,
  mergeMoments,
  proportionSequence,
  varianceOf,
} from './statistics.ts';

const SIMULATIONS = 200;

describe('ratio of means (delta method)', () => {
  it('covers a known 10% TTFT difference in at least 93% of 200 seeded simulations', () => {
    expect(ratioCoverage(SIMULATIONS, 200, 1.1, 1)).toBeGreaterThanOrEqual(0.93);
  });

  it('covers ratio 1 under no difference in at least 93% of 200 seeded simulations', () => {
    expect(ratioCoverage(SIMULATIONS, 150, 1, 1001)).toBeGreaterThanOrEqual(0.93);
  });
});

describe('sequential verdict (normal-mixture confidence sequence)', () => {
  it('says "better" or "worse" under no difference in at most 5% of 200 simulations, checked after every observation', () => {
    const none = decisions(SIMULATIONS, 1, 1000, 5001);
    expect((none.better + none.worse) / SIMULATIONS).toBeLessThanOrEqual(0.05);
  });

  it('finds a 10% TTFT regression "worse" (never "better") in most simulations', () => {
    const outcomes = decisions(SIMULATIONS, 1.1, 2000, 9001);
    expect(outcomes.better).toBeLessThanOrEqual(SIMULATIONS * 0.05);
    expect(outcomes.worse).toBeGreaterThanOrEqual(SIMULATIONS * 0.8);
  });
});

describe('sufficient statistics', () => {
  it('merged moments equal the moments of all observations together', () => {
    const random = seeded(7);
    const all = emptyMoments();
    const parts: Moments[] = [emptyMoments(), emptyMoments(), emptyMoments()];
    for (let i = 0; i < 300; i++) {
      const x = ttftSample(random, 1);
      addObservation(all, x);
      addObservation(parts[i % 3]!, x);
    }
    const merged = parts.reduce(mergeMoments, emptyMoments());
    expect(merged.n).toBe(all.n);
    expect(meanOf(merged)).toBeCloseTo(meanOf(all), 9);
    expect(varianceOf(merged)).toBeCloseTo(varianceOf(all), 6);
  });

  it('a mean interval needs two observations and a proportion sequence one', () => {
    const m = emptyMoments();
    addObservation(m, 0.5);
    expect(meanInterval(m, TAU)).toBeNull();
    addObservation(m, 0.7);
    const interval = meanInterval(m, TAU)!;
    expect(interval.fixed.estimate).toBeCloseTo(0.6, 12);
    expect(interval.sequential.low).toBeLessThan(interval.fixed.low);
    expect(proportionSequence(0, 0, TAU)).toBeNull();
    const p = proportionSequence(3, 10, TAU)!;
    expect(p.estimate).toBeCloseTo(0.3, 12);
    expect(p.high - p.low).toBeGreaterThan(0);
  });
});
