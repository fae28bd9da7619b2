import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { toHalfBits } from '../quant/fp16.ts';
import { dequantize } from '../quant/quantized-matrix.ts';
import { ggufTensorToMatrix } from './gguf-matrix.ts';
import {
  DECODABLE_TYPES,
  decodeToFloat32,
  encodeQ4_0,
  encodeQ8_0,
  GGMLQuantizationType,
  ggmlByteSize,
} from './gguf-tensors.ts';
import { SeededRandom } from './random.ts';

const T = GGMLQuantizationType;

function randomValues(count: number, seed: number, scale = 1): Float32Array {
  const random = new SeededRandom(seed);
  return Float32Array.from({ length: count }, () => (random.next() * 2 - 1) * scale);
}

function halfBytes(value: number): [number, number] {
  const bits = toHalfBits(value);
  return [bits & 0xff, bits >> 8];
}

describe('Q8_0 and Q4_0 blocks', () => {
  const values = randomValues(4 * 64, 11, 0.5);

  // Half a step, plus what storing d as fp16 moves the extreme codes (127 · d · 2^-11 ≈ 0.06 step).
  it('Q8_0 round-trips within half a step of each block (plus fp16 rounding of d)', () => {
    const bytes = encodeQ8_0(values);
    expect(bytes.length).toBe(ggmlByteSize(T.Q8_0, values.length));
    const back = decodeToFloat32(T.Q8_0, bytes, values.length);
    for (let b = 0; b < values.length / 32; b++) {
      const block = values.subarray(b * 32, b * 32 + 32);
      const step = Math.max(...block.map(Math.abs)) / 127;
      for (let j = 0; j < 32; j++)
        expect(Math.abs(back[b * 32 + j]! - block[j]!)).toBeLessThanOrEqual(step * 0.57);
    }
  });

  // ggml maps the extreme to −8, so the other side clamps at +7: up to one step there.
  it('Q4_0 round-trips within one step; byte j holds element j low and j+16 high', () => {
    const bytes = encodeQ4_0(values);
    const back = decodeToFloat32(T.Q4_0, bytes, values.length);
    for (let b = 0; b < values.length / 32; b++) {
      const block = values.subarray(b * 32, b * 32 + 32);
      const step = Math.max(...block.map(Math.abs)) / 8;
      for (let j = 0; j < 32; j++)
        expect(Math.abs(back[b * 32 + j]! - block[j]!)).toBeLessThanOrEqual(step * 1.01);
    }
    // A hand-made block: d = 0.5, byte j = (low j, high 15 − j).
    const block = new Uint8Array(18);
    [block[0], block[1]] = halfBytes(0.5);
    for (let j = 0; j < 16; j++) block[2 + j] = j | ((15 - j) << 4);
    const decoded = decodeToFloat32(T.Q4_0, block, 32);
    expect(decoded[3]).toBe((3 - 8) * 0.5);
    expect(decoded[16 + 3]).toBe((15 - 3 - 8) * 0.5);
  });

  it('map onto MatMulNBits matrices value for value (dequantize equals the GGUF decoding bit for bit)', () => {
    const rows = 8;
    const cols = 32;
    for (const [type, encode, bits] of [
      [T.Q8_0, encodeQ8_0, 8],
      [T.Q4_0, encodeQ4_0, 4],
    ] as const) {
      const bytes = encode(values);
      const matrix = ggufTensorToMatrix(type, bytes, rows, cols)!;
      expect(matrix).toMatchObject({ bits, blockSize: 32, rows, cols });
      expect(matrix.zeroPoints).toBeUndefined();
      expect(dequantize(matrix)).toEqual(decodeToFloat32(type, bytes, rows * cols));
    }
    expect(ggufTensorToMatrix(T.F16, new Uint8Array(512), 8, 32)).toBeUndefined();
  });
});

describe("every block type against ggml's reference dequantizers", () => {
  // Random blocks and their values as llama.cpp's gguf-py decodes them (see the .py beside the JSON).
  const reference = JSON.parse(
    fs.readFileSync(new URL('./testing/ggml-reference-blocks.json', import.meta.url), 'utf8'),
  ) as Record<string, { count: number; blocks: string; values: string }>;

  it.each(Object.keys(reference))('%s decodes to exactly the values gguf-py gives', (name) => {
    const { count, blocks, values } = reference[name]!;
    const raw = new Uint8Array(Buffer.from(blocks, 'base64'));
    const expected = new Float32Array(new Uint8Array(Buffer.from(values, 'base64')).buffer, 0, count);
    const type = T[name as keyof typeof T];
    expect(raw.length).toBe(ggmlByteSize(type, count));
    expect(decodeToFloat32(type, raw, count)).toEqual(expected);
  });

  it('covers every type the loader accepts besides the plain float ones', () => {
    const blockTypes = DECODABLE_TYPES.filter((t) => t !== T.F32 && t !== T.F16 && t !== T.BF16);
    expect(blockTypes.map((t) => T[t]).sort()).toEqual(Object.keys(reference).sort());
  });
});

describe('K-quants (decoded per the ggml block layouts)', () => {
  it('Q4_K: 8 sub-blocks with 6-bit scales and mins packed in 12 bytes', () => {
    const scales = [1, 2, 3, 4, 61, 50, 33, 17];
    const mins = [5, 6, 7, 8, 63, 40, 20, 9];
    const block = new Uint8Array(144);
    [block[0], block[1]] = halfBytes(0.25);
    [block[2], block[3]] = halfBytes(0.125);
    // Packing: bytes 0..3 scales 0..3 (+ top 2 bits of scales 4..7), bytes 4..7 mins 0..3 (+ top bits
    // of mins 4..7), bytes 8..11 low nibbles of scale and min 4..7.
    for (let j = 0; j < 4; j++) {
      block[4 + j] = scales[j]! | ((scales[j + 4]! >> 4) << 6);
      block[8 + j] = mins[j]! | ((mins[j + 4]! >> 4) << 6);
      block[12 + j] = (scales[j + 4]! & 0x0f) | ((mins[j + 4]! & 0x0f) << 4);
    }
    for (let i = 0; i < 128; i++) block[16 + i] = (i % 16) | ((15 - (i % 16)) << 4);
    const out = decodeToFloat32(T.Q4_K, block, 256);
    for (let sub = 0; sub < 8; sub++) {
      for (let l = 0; l < 32; l++) {
        // Chunk c = sub >> 1 uses bytes 32c..32c+31: low nibbles for even sub-blocks, high for odd.
        const byte = block[16 + 32 * (sub >> 1) + l]!;
        const q = sub % 2 === 0 ? byte & 0x0f : byte >> 4;
        expect(out[sub * 32 + l]).toBeCloseTo(0.25 * scales[sub]! * q - 0.125 * mins[sub]!, 6);
      }
    }
  });

  it('Q6_K: 4+2-bit codes minus 32, one int8 scale per 16 values, d last', () => {
    const block = new Uint8Array(210);
    const codes = Uint8Array.from({ length: 256 }, (_, i) => (i * 37) % 64);
    const subScales = Int8Array.from({ length: 16 }, (_, i) => i - 8);
    // Packing: in each 128-half, value l + 32k (k = 0..3) has its low nibble in ql[l + 32(k & 1)]
    // (low nibble for k < 2, high for k ≥ 2) and its top 2 bits in qh[l] at bit 2k.
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        for (let k = 0; k < 4; k++) {
          const c = codes[128 * h + l + 32 * k]!;
          const ql = 64 * h + l + 32 * (k & 1);
          block[ql]! |= (c & 0x0f) << (k >= 2 ? 4 : 0);
          block[128 + 32 * h + l]! |= (c >> 4) << (2 * k);
        }
      }
    }
    for (let i = 0; i < 16; i++) block[192 + i] = subScales[i]! & 0xff;
    [block[208], block[209]] = halfBytes(0.5);
    const out = decodeToFloat32(T.Q6_K, block, 256);
    for (let i = 0; i < 256; i++) expect(out[i]).toBe(0.5 * subScales[i >> 4]! * (codes[i]! - 32));
  });

  it('an unsupported type is named in the error', () => {
    expect(() => decodeToFloat32(T.IQ2_XS, new Uint8Array(66), 256)).toThrow(
      /IQ2_XS \(17\) is not supported/,
    );
  });
});
