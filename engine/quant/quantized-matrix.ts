/**
 * A linear layer's weight matrix already in the layout of onnxruntime's `com.microsoft` MatMulNBits
 * operator, so the graph builder hands its bytes to the session as they are (no repacking at session
 * creation, and a GGUF Q4_0 / Q8_0 tensor can be mapped into it without a lossy round trip).
 *
 * The matrix is W with shape (rows = N = out features, cols = K = in features), as checkpoints store
 * a Linear; the operator computes y = x · Wᵀ. It is cut along K into blocks of `blockSize` values
 * (the last block of a row is zero-padded when K is not a multiple); each block has one scale and one
 * zero point, and element k of row n dequantizes to
 *
 *     W[n, k] = (q[n, k] − zeroPoint[n, ⌊k / blockSize⌋]) · scales[n · nBlocks + ⌊k / blockSize⌋]
 *
 * Layouts (nBlocks = ceil(K / blockSize)):
 *  - `data`: uint8 [N, nBlocks, blockSize · bits / 8], row after row, block after block, codes in K
 *    order. 8-bit: one code per byte. 4-bit: two codes per byte, LOW nibble first — element 2i of a
 *    block in bits 0..3, element 2i+1 in bits 4..7 (checked against ORT in quantized-matrix.test.ts).
 *  - `scales`: float32 [N · nBlocks].
 *  - `zeroPoints`: uint8, absent = the symmetric default 2^(bits−1) (8 for 4-bit, 128 for 8-bit).
 *    8-bit: [N · nBlocks], one per byte. 4-bit: [N · ceil(nBlocks / 2)], two per byte, low nibble
 *    first, each ROW padded to whole bytes (the odd last nibble of a row is unused).
 *
 * GGUF mapping, for reference: Q8_0 (int8 q, fp16 d, x = d·q) is 8-bit with zero point 128 and
 * code q + 128; Q4_0 (x = d·(q − 8), q in 0..15, elements j and j+16 share a byte) is 4-bit with the
 * default zero point once each 32-block's nibbles are reordered to K order.
 */
export interface QuantizedMatrix {
  kind: 'nbits';
  bits: 4 | 8;
  /** Values per block along K: a power of two ≥ 16 (MatMulNBits); 32 by default (`--quant-block`). */
  blockSize: number;
  /** N: output features. */
  rows: number;
  /** K: input features. */
  cols: number;
  data: Uint8Array;
  scales: Float32Array;
  zeroPoints?: Uint8Array;
}

export function blocksPerRow(m: Pick<QuantizedMatrix, 'cols' | 'blockSize'>): number {
  return Math.ceil(m.cols / m.blockSize);
}

/** Bytes of `data` for one block: blockSize · bits / 8. */
export function bytesPerBlock(m: Pick<QuantizedMatrix, 'bits' | 'blockSize'>): number {
  return (m.blockSize * m.bits) / 8;
}

/** Bytes the operator reads for the whole matrix: codes + scales + zero points. */
export function quantizedByteLength(m: QuantizedMatrix): number {
  return m.data.byteLength + m.scales.byteLength + (m.zeroPoints?.byteLength ?? 0);
}

/** Zero point of block b of row n (the symmetric default when the matrix has none). */
export function zeroPointAt(m: QuantizedMatrix, row: number, block: number): number {
  if (!m.zeroPoints) return 1 << (m.bits - 1);
  if (m.bits === 8) return m.zeroPoints[row * blocksPerRow(m) + block]!;
  const byte = m.zeroPoints[row * Math.ceil(blocksPerRow(m) / 2) + (block >> 1)]!;
  return block & 1 ? byte >> 4 : byte & 0x0f;
}

/** Code of element k of row n, 0..2^bits − 1. */
export function codeAt(m: QuantizedMatrix, row: number, k: number): number {
  const block = Math.floor(k / m.blockSize);
  const inBlock = k - block * m.blockSize;
  const base = (row * blocksPerRow(m) + block) * bytesPerBlock(m);
  if (m.bits === 8) return m.data[base + inBlock]!;
  const byte = m.data[base + (inBlock >> 1)]!;
  return inBlock & 1 ? byte >> 4 : byte & 0x0f;
}

/** The matrix MatMulNBits multiplies by, as float32 row-major (rows, cols) = (out, in). */
export function dequantize(m: QuantizedMatrix): Float32Array {
  checkQuantizedMatrix(m);
  const nBlocks = blocksPerRow(m);
  const out = new Float32Array(m.rows * m.cols);
  for (let n = 0; n < m.rows; n++) {
    for (let b = 0; b < nBlocks; b++) {
      const scale = m.scales[n * nBlocks + b]!;
      const zero = zeroPointAt(m, n, b);
      const end = Math.min(m.cols, (b + 1) * m.blockSize);
      for (let k = b * m.blockSize; k < end; k++) {
        out[n * m.cols + k] = Math.fround((codeAt(m, n, k) - zero) * scale);
      }
    }
  }
  return out;
}

/** Throws a RangeError naming the field whose length does not fit the declared shape. */
export function checkQuantizedMatrix(m: QuantizedMatrix): void {
  const { bits, blockSize, rows, cols } = m;
  if (bits !== 4 && bits !== 8) throw new RangeError(`bits must be 4 or 8, got ${bits}`);
  if (!Number.isInteger(blockSize) || blockSize < 16 || (blockSize & (blockSize - 1)) !== 0)
    throw new RangeError(`block size must be a power of two ≥ 16, got ${blockSize}`);
  const nBlocks = blocksPerRow(m);
  const expect = (what: string, actual: number, wanted: number) => {
    if (actual !== wanted)
      throw new RangeError(`quantized ${rows}×${cols} matrix: ${what} has ${actual}, wants ${wanted}`);
  };
  expect('data (bytes)', m.data.length, rows * nBlocks * bytesPerBlock(m));
  expect('scales', m.scales.length, rows * nBlocks);
  if (m.zeroPoints) {
    const perRow = bits === 8 ? nBlocks : Math.ceil(nBlocks / 2);
    expect('zeroPoints (bytes)', m.zeroPoints.length, rows * perRow);
  }
}
