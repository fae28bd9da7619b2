/**
 * The little float64 linear algebra the emulation fit needs. Dimensions are a model's width (a few
 * hundred at most here), so plain O(n³) loops are fine and keep the code readable. Matrices are
 * row-major Float64Array of n·m values.
 */

/** C = A · B for A [n, k], B [k, m]. */
export function matMul(a: Float64Array, b: Float64Array, n: number, k: number, m: number): Float64Array {
  const c = new Float64Array(n * m);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < k; p++) {
      const aip = a[i * k + p]!;
      if (aip === 0) continue;
      const bRow = p * m;
      const cRow = i * m;
      for (let j = 0; j < m; j++) c[cRow + j] += aip * b[bRow + j]!;
    }
  }
  return c;
}

/** Aᵀ for A [n, m]. */
export function transpose(a: Float64Array, n: number, m: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) t[j * n + i] = a[i * m + j]!;
  return t;
}

/**
 * Solves A · X = B for a symmetric positive definite A [n, n] and B [n, m] by Cholesky
 * factorisation A = L Lᵀ, then forward and back substitution per column.
 */
export function choleskySolve(a: Float64Array, b: Float64Array, n: number, m: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = a[i * n + j]!;
      for (let p = 0; p < j; p++) sum -= l[i * n + p]! * l[j * n + p]!;
      if (i === j) {
        if (!(sum > 0)) throw new RangeError(`matrix is not positive definite (pivot ${i} = ${sum})`);
        l[i * n + i] = Math.sqrt(sum);
      } else {
        l[i * n + j] = sum / l[j * n + j]!;
      }
    }
  }
  const x = new Float64Array(n * m);
  const y = new Float64Array(n);
  for (let col = 0; col < m; col++) {
    for (let i = 0; i < n; i++) {
      let sum = b[i * m + col]!;
      for (let p = 0; p < i; p++) sum -= l[i * n + p]! * y[p]!;
      y[i] = sum / l[i * n + i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let sum = y[i]!;
      for (let p = i + 1; p < n; p++) sum -= l[p * n + i]! * x[p * m + col]!;
      x[i * m + col] = sum / l[i * n + i]!;
    }
  }
  return x;
}

export interface SymmetricEigen {
  /** Eigenvalues, largest first. */
  values: Float64Array; // [n]
  /** Column j is the unit eigenvector of values[j]. */
  vectors: Float64Array; // [n, n] row-major
}

/**
 * Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: each rotation zeroes one
 * off-diagonal pair; sweeps repeat until the off-diagonal mass is negligible. Slow for big n but
 * exact to rounding and simple, which is what a ≤ few-hundred-wide fit needs.
 */
export function symmetricEigen(input: Float64Array, n: number, maxSweeps = 100): SymmetricEigen {
  const a = Float64Array.from(input);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  let scale = 0;
  for (let i = 0; i < n * n; i++) scale += a[i]! * a[i]!;
  const tolerance = 1e-30 * Math.max(scale, Number.MIN_VALUE);
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q]! * a[p * n + q]!;
    if (off <= tolerance) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        // Rotation angle that zeroes a[p][q] (Golub & Van Loan, symmetric Schur).
        const theta = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!;
          const vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[j * n + j]! - a[i * n + i]!);
  const values = Float64Array.from(order, (i) => a[i * n + i]!);
  const vectors = new Float64Array(n * n);
  order.forEach((from, to) => {
    for (let k = 0; k < n; k++) vectors[k * n + to] = v[k * n + from]!;
  });
  return { values, vectors };
}
