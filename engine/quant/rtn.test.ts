import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../model/random.ts';
import { fromHalfBits, roundThroughHalf, toHalfBits } from './fp16.ts';
import type { QuantizedMatrix } from './quantized-matrix.ts';
import { blocksPerRow, checkQuantizedMatrix, codeAt, dequantize, zeroPointAt } from './quantized-matrix.ts';
import { quantizeRtn } from './rtn.ts';

const rng = new SeededRandom(7);

/** Heavy-tailed rows (a few large values per row) like real projection weights, plus exact zeros. */
function sampleMatrix(rows: number, cols: number): Float32Array {
  const values = rng.fillNormal(rows * cols, 0.05);
  for (let i = 0; i < values.length; i += 37) values[i] = values[i]! * 12;
  for (let i = 5; i < values.length; i += 101) values[i] = 0;
  return values;
}

describe('RTN round trip', () => {
  const shapes: [number, number][] = [
    [8, 64],
    [5, 80], // K not a multiple of the block: the last block is padded
    [3, 16],
  ];
  for (const bits of [4, 8] as const) {
    for (const zeroPoints of [false, true]) {
      for (const blockSize of [16, 32, 64]) {
        it(`int${bits}, block ${blockSize}, ${zeroPoints ? 'zero points' : 'symmetric'}: |x − deq(q(x))| ≤ scale/2 per block`, () => {
          for (const [rows, cols] of shapes) {
            const x = sampleMatrix(rows, cols);
            const q = quantizeRtn(x, rows, cols, { bits, blockSize, zeroPoints });
            checkQuantizedMatrix(q);
            const back = dequantize(q);
            const nBlocks = blocksPerRow(q);
            let exactZeros = 0;
            for (let n = 0; n < rows; n++) {
              for (let k = 0; k < cols; k++) {
                const scale = q.scales[n * nBlocks + Math.floor(k / blockSize)]!;
                const error = Math.abs(x[n * cols + k]! - back[n * cols + k]!);
                expect(error).toBeLessThanOrEqual(scale / 2 + 1e-6 * scale + 1e-12);
                if (x[n * cols + k] === 0 && back[n * cols + k] === 0) exactZeros++;
              }
            }
            // zero is on the grid (the range always holds 0), so exact zeros survive
            expect(exactZeros).toBe(x.filter((v) => v === 0).length);
            // the codes use the range: some block reaches the top or bottom code
            let extreme = 0;
            for (let n = 0; n < rows; n++)
              for (let k = 0; k < cols; k++) {
                const c = codeAt(q, n, k);
                if (c === 0 || c === (1 << bits) - 1 || c === 1) extreme++;
              }
            expect(extreme).toBeGreaterThan(0);
          }
        });
      }
    }
  }

  it('an all-zero block gets scale 0 and comes back as zeros', () => {
    const x = new Float32Array(64);
    x.fill(0.5, 32);
    const q = quantizeRtn(x, 1, 64, { bits: 4, blockSize: 32, zeroPoints: true });
    expect(q.scales[0]).toBe(0);
    expect(Array.from(dequantize(q).subarray(0, 32))).toEqual(new Array(32).fill(0));
    expect(Math.max(...Array.from(dequantize(q).subarray(32)).map((v) => Math.abs(v - 0.5)))).toBeLessThan(
      0.02,
    );
  });
});

describe('QuantizedMatrix layout', () => {
  it('4-bit: element 2i in the low nibble, 2i+1 in the high one; zero points two per byte, per row', () => {
    const m: QuantizedMatrix = {
      kind: 'nbits',
      bits: 4,
      blockSize: 16,
      rows: 2,
      cols: 48, // 3 blocks per row → 2 zero-point bytes per row
      data: new Uint8Array(2 * 3 * 8),
      scales: Float32Array.from({ length: 6 }, (_, i) => i + 1),
      zeroPoints: Uint8Array.of(0x21, 0x03, 0x54, 0x06),
    };
    m.data[0] = 0xa5; // row 0, elements 0 (5) and 1 (10)
    expect(codeAt(m, 0, 0)).toBe(5);
    expect(codeAt(m, 0, 1)).toBe(10);
    expect([0, 1, 2].map((b) => zeroPointAt(m, 0, b))).toEqual([1, 2, 3]);
    expect([0, 1, 2].map((b) => zeroPointAt(m, 1, b))).toEqual([4, 5, 6]);
    const w = dequantize(m);
    expect(w[0]).toBe((5 - 1) * 1);
    expect(w[1]).toBe((10 - 1) * 1);
    expect(w[48 + 16]).toBe((0 - 5) * 5); // row 1, block 1: code 0, zero point 5, scale 5
  });

  it('rejects arrays that do not fit the shape, naming the field', () => {
    const m = quantizeRtn(new Float32Array(64), 2, 32, { bits: 8, blockSize: 32, zeroPoints: false });
    expect(() => checkQuantizedMatrix({ ...m, scales: new Float32Array(3) })).toThrow(
      /scales has 3, wants 2/,
    );
    expect(() => checkQuantizedMatrix({ ...m, blockSize: 24 })).toThrow(/power of two/);
  });
});

describe('fp16', () => {
  it('rounds to nearest even and keeps exactly representable values', () => {
    for (const v of [0, 1, -2.5, 65504, 2 ** -24, 0.1]) {
      const back = fromHalfBits(toHalfBits(v));
      expect(Math.abs(back - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 2 ** -25);
    }
    expect(fromHalfBits(toHalfBits(1 + 2 ** -11))).toBe(1); // a tie goes to the even mantissa
    expect(fromHalfBits(toHalfBits(1e6))).toBe(Number.POSITIVE_INFINITY);
    const x = rng.fillNormal(1000, 1);
    const once = roundThroughHalf(x);
    expect(roundThroughHalf(once)).toEqual(once);
  });
});
