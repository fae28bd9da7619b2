import { fromHalfBits } from '../quant/fp16.ts';
import type { QuantizedMatrix } from '../quant/quantized-matrix.ts';
import { GGMLQuantizationType } from './gguf-tensors.ts';

/**
 * GGUF Q8_0 / Q4_0 matrices as MatMulNBits matrices, value for value. Both formats cut each row
 * into 32-value blocks with one fp16 scale d, which is what MatMulNBits with block size 32 has
 * (its float32 scale holds the fp16 d exactly):
 *
 *   Q8_0  value = q·d, q int8             → 8-bit code q + 128, default zero point 128
 *   Q4_0  value = (n − 8)·d, n in 0..15    → 4-bit code n, default zero point 8; only the nibble
 *         order differs: GGUF byte j holds elements j (low) and j+16 (high), MatMulNBits byte i
 *         holds elements 2i (low) and 2i+1 (high).
 *
 * Any other type gives undefined (the caller decodes it to float32).
 */

const BLOCK = 32;

export function ggufTensorToMatrix(
  type: number,
  bytes: Uint8Array,
  rows: number,
  cols: number,
): QuantizedMatrix | undefined {
  if (cols % BLOCK !== 0) return undefined;
  const blocks = (rows * cols) / BLOCK;
  const scales = new Float32Array(blocks);
  if (type === GGMLQuantizationType.Q8_0) {
    const data = new Uint8Array(rows * cols);
    for (let b = 0; b < blocks; b++) {
      const at = b * 34;
      scales[b] = fromHalfBits(bytes[at]! | (bytes[at + 1]! << 8));
      // int8 q + 128 as uint8 is the two's-complement byte with its top bit flipped.
      for (let j = 0; j < BLOCK; j++) data[b * BLOCK + j] = bytes[at + 2 + j]! ^ 0x80;
    }
    return { kind: 'nbits', bits: 8, blockSize: BLOCK, rows, cols, data, scales };
  }
  if (type === GGMLQuantizationType.Q4_0) {
    const data = new Uint8Array((rows * cols) / 2);
    const codes = new Uint8Array(BLOCK);
    for (let b = 0; b < blocks; b++) {
      const at = b * 18;
      scales[b] = fromHalfBits(bytes[at]! | (bytes[at + 1]! << 8));
      for (let j = 0; j < 16; j++) {
        const packed = bytes[at + 2 + j]!;
        codes[j] = packed & 0x0f;
        codes[j + 16] = packed >> 4;
      }
      for (let i = 0; i < 16; i++) data[b * 16 + i] = codes[2 * i]! | (codes[2 * i + 1]! << 4);
    }
    return { kind: 'nbits', bits: 4, blockSize: BLOCK, rows, cols, data, scales };
  }
  return undefined;
}
