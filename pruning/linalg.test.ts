import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../engine/model/random.ts';
import { choleskySolve, matMul, symmetricEigen, transpose } from './linalg.ts';

function randomMatrix(n: number, m: number, seed: number): Float64Array {
  const rng = new SeededRandom(seed);
  return Float64Array.from({ length: n * m }, () => rng.normal());
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

describe('linalg', () => {
  it('choleskySolve solves an SPD system', () => {
    const n = 12;
    const g = randomMatrix(n, n, 1);
    const a = matMul(g, transpose(g, n, n), n, n, n);
    for (let i = 0; i < n; i++) a[i * n + i] += 0.5;
    const b = randomMatrix(n, 3, 2);
    const x = choleskySolve(a, b, n, 3);
    expect(maxAbsDiff(matMul(a, x, n, n, 3), b)).toBeLessThan(1e-10);
    expect(() => choleskySolve(new Float64Array([1, 2, 2, 1]), new Float64Array([1, 1]), 2, 1)).toThrow(
      /positive definite/,
    );
  });

  it('symmetricEigen: A V = V Λ, V orthonormal, values sorted descending', () => {
    const n = 20;
    const g = randomMatrix(n, n, 3);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = g[i * n + j]! + g[j * n + i]!;
    const { values, vectors } = symmetricEigen(a, n);
    const av = matMul(a, vectors, n, n, n);
    const vl = Float64Array.from(vectors, (v, idx) => v * values[idx % n]!);
    expect(maxAbsDiff(av, vl)).toBeLessThan(1e-9);
    const vtv = matMul(transpose(vectors, n, n), vectors, n, n, n);
    const identity = Float64Array.from({ length: n * n }, (_, idx) => (idx % (n + 1) === 0 ? 1 : 0));
    expect(maxAbsDiff(vtv, identity)).toBeLessThan(1e-12);
    for (let i = 1; i < n; i++) expect(values[i]!).toBeLessThanOrEqual(values[i - 1]!);
  });
});
