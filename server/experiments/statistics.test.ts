import { describe, expect, it } from 'vitest';
import {
  addObservation,
  emptyMoments,
  type Moments,
  meanInterval,
  meanOf,
  mergeMoments,
  proportionSequence,
  ratioOfMeans,
  varianceOf,
} from './statistics.ts';
import { verdictOf } from './verdict.ts';

/** mulberry32: a small seeded PRNG, so every simulation below is reproducible. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function normal(random: () => number): number {
  const u = 1 - random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** TTFT-like: log-normal, right-skewed, σ = 0.5 on the log scale; mean = exp(mu + σ²/2). */
const ttft = (random: () => number, scale: number): number => 40 * scale * Math.exp(0.5 * normal(random));

const SIMULATIONS = 200;
const TAU = 0.05;

describe('ratio of means (delta method)', () => {
  it('covers a known 10% TTFT difference in at least 93% of 200 seeded simulations', () => {
    let covered = 0;
    for (let seed = 1; seed <= SIMULATIONS; seed++) {
      const random = seeded(seed);
      const control = emptyMoments();
      const arm = emptyMoments();
      for (let i = 0; i < 200; i++) {
        addObservation(control, ttft(random, 1));
        addObservation(arm, ttft(random, 1.1));
      }
      const ratio = ratioOfMeans(control, arm, TAU)!;
      if (ratio.fixed.low <= 1.1 && 1.1 <= ratio.fixed.high) covered++;
    }
    expect(covered / SIMULATIONS).toBeGreaterThanOrEqual(0.93);
  });

  it('covers ratio 1 under no difference in at least 93% of 200 seeded simulations', () => {
    let covered = 0;
    for (let seed = 1001; seed < 1001 + SIMULATIONS; seed++) {
      const random = seeded(seed);
      const control = emptyMoments();
      const arm = emptyMoments();
      for (let i = 0; i < 150; i++) {
        addObservation(control, ttft(random, 1));
        addObservation(arm, ttft(random, 1));
      }
      const ratio = ratioOfMeans(control, arm, TAU)!;
      if (ratio.fixed.low <= 1 && 1 <= ratio.fixed.high) covered++;
    }
    expect(covered / SIMULATIONS).toBeGreaterThanOrEqual(0.93);
  });
});

describe('sequential verdict (normal-mixture confidence sequence)', () => {
  /** Feeds both arms one observation at a time and checks the verdict after every single one. */
  function firstDecision(seed: number, armScale: number, perArm: number): { verdict: string; atN: number } {
    const random = seeded(seed);
    const control = emptyMoments();
    const arm = emptyMoments();
    for (let i = 0; i < perArm; i++) {
      for (const [m, scale] of [
        [control, 1],
        [arm, armScale],
      ] as const) {
        addObservation(m, ttft(random, scale));
        const ratio = ratioOfMeans(control, arm, TAU);
        const verdict = verdictOf(
          ratio?.sequential ?? null,
          1,
          'lower-is-better',
          Math.min(control.n, arm.n),
        );
        if (verdict !== 'no detectable difference yet') return { verdict, atN: control.n + arm.n };
      }
    }
    return { verdict: 'no detectable difference yet', atN: 2 * perArm };
  }

  it('says "better" or "worse" under no difference in at most 5% of 200 simulations, checked after every observation', () => {
    let falseDecisions = 0;
    for (let seed = 5001; seed < 5001 + SIMULATIONS; seed++) {
      if (firstDecision(seed, 1, 1000).verdict !== 'no detectable difference yet') falseDecisions++;
    }
    expect(falseDecisions / SIMULATIONS).toBeLessThanOrEqual(0.05);
  });

  it('finds a 10% TTFT regression "worse" (never "better") in most simulations', () => {
    const outcomes = { worse: 0, better: 0, undecided: 0 };
    for (let seed = 9001; seed < 9001 + SIMULATIONS; seed++) {
      const { verdict } = firstDecision(seed, 1.1, 2000);
      if (verdict === 'worse') outcomes.worse++;
      else if (verdict === 'better') outcomes.better++;
      else outcomes.undecided++;
    }
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
      const x = ttft(random, 1);
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
