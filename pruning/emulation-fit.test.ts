import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../engine/model/random.ts';
import { fitBias, fitLowRank, UpdateStatistics } from './emulation-fit.ts';

/** Synthetic activations: x ~ N(0, I) with a non-zero mean, y = c + x·A·B with A [d, r], B [r, d]. */
function lowRankData(dim: number, rank: number, numTokens: number, noise = 0) {
  const rng = new SeededRandom(11);
  const a = Float64Array.from({ length: dim * rank }, () => rng.normal());
  const b = Float64Array.from({ length: rank * dim }, () => rng.normal());
  const c = Float64Array.from({ length: dim }, () => rng.normal());
  const stats = new UpdateStatistics(dim, true);
  const xs: Float64Array[] = [];
  const ys: Float64Array[] = [];
  for (let t = 0; t < numTokens; t++) {
    const x = Float64Array.from({ length: dim }, () => 0.5 + rng.normal());
    const xa = new Float64Array(rank);
    for (let i = 0; i < dim; i++) for (let j = 0; j < rank; j++) xa[j] += x[i]! * a[i * rank + j]!;
    const y = Float64Array.from(c);
    for (let j = 0; j < rank; j++) for (let k = 0; k < dim; k++) y[k] += xa[j]! * b[j * dim + k]!;
    for (let k = 0; k < dim; k++) y[k] += noise * rng.normal();
    stats.add(x, y);
    xs.push(x);
    ys.push(y);
  }
  return { stats, xs, ys, c };
}

function predict(fit: ReturnType<typeof fitLowRank>, x: Float64Array): Float64Array {
  const dim = x.length;
  const h = new Float64Array(fit.rank);
  for (let i = 0; i < dim; i++)
    for (let j = 0; j < fit.rank; j++) h[j] += x[i]! * fit.down[i * fit.rank + j]!;
  const y = Float64Array.from(fit.bias);
  for (let j = 0; j < fit.rank; j++) for (let k = 0; k < dim; k++) y[k] += h[j]! * fit.up[j * dim + k]!;
  return y;
}

describe('emulation fits', () => {
  it('bias is the mean update', () => {
    const stats = new UpdateStatistics(3, false);
    stats.add([0, 0, 0], [1, 2, 3]);
    stats.add([0, 0, 0], [3, 2, 1]);
    expect(Array.from(fitBias(stats))).toEqual([2, 2, 2]);
  });

  it('low-rank recovers an exactly rank-r affine map (fit error ~0)', () => {
    const dim = 24;
    const rank = 3;
    const { stats, xs, ys } = lowRankData(dim, rank, 400);
    const fit = fitLowRank(stats, rank, 1e-12);
    expect(fit.explainedVariance).toBeGreaterThan(1 - 1e-8);
    let maxError = 0;
    let maxValue = 0;
    xs.forEach((x, t) => {
      const y = predict(fit, x);
      for (let k = 0; k < dim; k++) {
        maxError = Math.max(maxError, Math.abs(y[k]! - ys[t]![k]!));
        maxValue = Math.max(maxValue, Math.abs(ys[t]![k]!));
      }
    });
    expect(maxError / maxValue).toBeLessThan(1e-5); // float32 storage of down/up/bias bounds this
  });

  it('a smaller rank than the truth explains less, more ridge explains less, rank = truth explains all', () => {
    const { stats } = lowRankData(16, 4, 300, 0.01);
    const r2 = fitLowRank(stats, 2, 1e-9).explainedVariance;
    const r4 = fitLowRank(stats, 4, 1e-9).explainedVariance;
    const r4Ridge = fitLowRank(stats, 4, 10).explainedVariance;
    expect(r2).toBeLessThan(r4);
    expect(r4).toBeGreaterThan(0.999);
    expect(r4Ridge).toBeLessThan(r4);
    expect(() => fitLowRank(stats, 17)).toThrow(/rank 17/);
  });
});
