/**
 * Round-to-nearest block quantization of a float32 (out, in) matrix into MatMulNBits layout
 * (quantized-matrix.ts). Every block of `blockSize` values along K gets its own scale:
 *  - symmetric: scale = max|x| / (2^(bits−1) − 1), code = round(x / scale) + 2^(bits−1), no zero
 *    points stored (the operator's default applies);
 *  - asymmetric: scale = (max − min) / (2^bits − 1), zero point = round(−min / scale), code =
 *    round(x / scale) + zero point; the range's ends are reached within half a step.
 * Either way each value comes back within scale / 2 of where it was (float rounding aside).
 */
import type { QuantizedMatrix } from './quantized-matrix.ts';
import { blocksPerRow, bytesPerBlock } from './quantized-matrix.ts';

export interface RtnOptions {
  bits: 4 | 8;
  blockSize: number;
  /** Store a zero point per block (asymmetric range) instead of the symmetric default. */
  zeroPoints: boolean;
}

export function quantizeRtn(
  values: Float32Array,
  rows: number,
  cols: number,
  options: RtnOptions,
): QuantizedMatrix {
  if (values.length !== rows * cols)
    throw new RangeError(`${values.length} values do not fill a ${rows}×${cols} matrix`);
  const { bits, blockSize } = options;
  const shape = { bits, blockSize, rows, cols };
  const nBlocks = blocksPerRow(shape);
  const blockBytes = bytesPerBlock(shape);
  const data = new Uint8Array(rows * nBlocks * blockBytes);
  const scales = new Float32Array(rows * nBlocks);
  const zeroBytesPerRow = bits === 8 ? nBlocks : Math.ceil(nBlocks / 2);
  const zeroPoints = options.zeroPoints ? new Uint8Array(rows * zeroBytesPerRow) : undefined;
  const maxCode = (1 << bits) - 1;
  const symmetricZero = 1 << (bits - 1);
  const codes = new Uint8Array(blockSize);

  for (let n = 0; n < rows; n++) {
    for (let b = 0; b < nBlocks; b++) {
      const start = n * cols + b * blockSize;
      const length = Math.min(blockSize, cols - b * blockSize);
      let min = 0; // 0 stays representable: padding and exact zeros dequantize to 0
      let max = 0;
      for (let i = 0; i < length; i++) {
        const x = values[start + i]!;
        if (x < min) min = x;
        if (x > max) max = x;
      }
      let scale: number;
      let zero: number;
      if (zeroPoints) {
        scale = Math.fround((max - min) / maxCode);
        zero = scale > 0 ? Math.min(maxCode, Math.max(0, Math.round(-min / scale))) : symmetricZero;
      } else {
        scale = Math.fround(Math.max(max, -min) / (symmetricZero - 1));
        zero = symmetricZero;
      }
      const inverse = scale > 0 ? 1 / scale : 0;
      codes.fill(zero);
      for (let i = 0; i < length; i++) {
        const q = Math.round(values[start + i]! * inverse) + zero;
        codes[i] = Math.min(maxCode, Math.max(0, q));
      }
      scales[n * nBlocks + b] = scale;
      const base = (n * nBlocks + b) * blockBytes;
      if (bits === 8) data.set(codes, base);
      else for (let i = 0; i < blockBytes; i++) data[base + i] = codes[2 * i]! | (codes[2 * i + 1]! << 4);
      if (zeroPoints) {
        if (bits === 8) zeroPoints[n * zeroBytesPerRow + b] = zero;
        else zeroPoints[n * zeroBytesPerRow + (b >> 1)]! |= b & 1 ? zero << 4 : zero;
      }
    }
  }
  return { kind: 'nbits', bits, blockSize, rows, cols, data, scales, ...(zeroPoints ? { zeroPoints } : {}) };
}
