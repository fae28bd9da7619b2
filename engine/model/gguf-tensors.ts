import { GGMLQuantizationType } from '@huggingface/gguf';
import { fromHalfBits, toHalfArray, toHalfBits } from '../quant/fp16.ts';
import { f16ToFloat32 } from './safetensors.ts';

/**
 * GGML tensor types as stored in GGUF files: sizes, decoding to float32, and the two block
 * quantizers (Q8_0, Q4_0) the fixture writer needs. Layouts follow the GGUF specification and
 * ggml's reference (de)quantizers:
 *
 *   Q8_0  32 values: fp16 d, then 32 int8 q             value = q·d
 *   Q4_0  32 values: fp16 d, then 16 bytes              value = (nibble − 8)·d; byte j holds value j
 *                                                        in its low nibble and value j+16 in its high one
 *   Q4_K  256 values: fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles
 *   Q6_K  256 values: 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, fp16 d
 */

export { GGMLQuantizationType };

export interface GgmlTypeLayout {
  /** Values per block (1 for plain float/int types). */
  blockValues: number;
  /** Bytes per block. */
  blockBytes: number;
}

const LAYOUTS: Partial<Record<GGMLQuantizationType, GgmlTypeLayout>> = {
  [GGMLQuantizationType.F32]: { blockValues: 1, blockBytes: 4 },
  [GGMLQuantizationType.F16]: { blockValues: 1, blockBytes: 2 },
  [GGMLQuantizationType.BF16]: { blockValues: 1, blockBytes: 2 },
  [GGMLQuantizationType.Q4_0]: { blockValues: 32, blockBytes: 18 },
  [GGMLQuantizationType.Q4_1]: { blockValues: 32, blockBytes: 20 },
  [GGMLQuantizationType.Q5_0]: { blockValues: 32, blockBytes: 22 },
  [GGMLQuantizationType.Q5_1]: { blockValues: 32, blockBytes: 24 },
  [GGMLQuantizationType.Q8_0]: { blockValues: 32, blockBytes: 34 },
  [GGMLQuantizationType.Q2_K]: { blockValues: 256, blockBytes: 84 },
  [GGMLQuantizationType.Q3_K]: { blockValues: 256, blockBytes: 110 },
  [GGMLQuantizationType.Q4_K]: { blockValues: 256, blockBytes: 144 },
  [GGMLQuantizationType.Q5_K]: { blockValues: 256, blockBytes: 176 },
  [GGMLQuantizationType.Q6_K]: { blockValues: 256, blockBytes: 210 },
};

/** Types this loader can turn into float32 (the block-quantized ones losslessly). */
export const DECODABLE_TYPES: readonly GGMLQuantizationType[] = [
  GGMLQuantizationType.F32,
  GGMLQuantizationType.F16,
  GGMLQuantizationType.BF16,
  GGMLQuantizationType.Q8_0,
  GGMLQuantizationType.Q4_0,
  GGMLQuantizationType.Q4_1,
  GGMLQuantizationType.Q5_0,
  GGMLQuantizationType.Q5_1,
  GGMLQuantizationType.Q2_K,
  GGMLQuantizationType.Q3_K,
  GGMLQuantizationType.Q4_K,
  GGMLQuantizationType.Q5_K,
  GGMLQuantizationType.Q6_K,
];

/** "Q4_K (12)" for a known id, "type 99" otherwise. */
export function ggmlTypeName(type: number): string {
  const name = (GGMLQuantizationType as unknown as Record<number, string | undefined>)[type];
  return name === undefined ? `type ${type}` : `${name} (${type})`;
}

export function ggmlLayout(type: number): GgmlTypeLayout | undefined {
  return LAYOUTS[type as GGMLQuantizationType];
}

/** Bytes `count` values of `type` occupy; undefined when the type or a partial block makes it unknown. */
export function ggmlByteSize(type: number, count: number): number | undefined {
  const layout = ggmlLayout(type);
  if (!layout || count % layout.blockValues !== 0) return undefined;
  return (count / layout.blockValues) * layout.blockBytes;
}

/**
 * `count` values of `type` from `bytes` (exactly ggmlByteSize long) as float32; for F32 the result
 * may be a view of `bytes`. Throws a RangeError naming the type when it has no decoder here; callers
 * add the tensor name.
 */
export function decodeToFloat32(type: number, bytes: Uint8Array, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case GGMLQuantizationType.F32: {
      // x64 and arm64 are little-endian like the file: the bytes are the array (a view when aligned).
      const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice(0, count * 4);
      return new Float32Array(aligned.buffer, aligned.byteOffset, count);
    }
    case GGMLQuantizationType.F16:
      return f16ToFloat32(copyUint16(view, count));
    case GGMLQuantizationType.BF16: {
      const bits = new Uint32Array(count);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(i * 2, true) << 16;
      return new Float32Array(bits.buffer);
    }
    case GGMLQuantizationType.Q8_0:
      return decodeQ8_0(bytes, count);
    case GGMLQuantizationType.Q4_0:
      return decodeQ4_0(bytes, count);
    case GGMLQuantizationType.Q4_1:
      return decodeQ4_1(bytes, count);
    case GGMLQuantizationType.Q5_0:
      return decodeQ5(bytes, count, false);
    case GGMLQuantizationType.Q5_1:
      return decodeQ5(bytes, count, true);
    case GGMLQuantizationType.Q2_K:
      return decodeQ2K(bytes, count);
    case GGMLQuantizationType.Q3_K:
      return decodeQ3K(bytes, count);
    case GGMLQuantizationType.Q4_K:
      return decodeQ4K(bytes, count);
    case GGMLQuantizationType.Q5_K:
      return decodeQ5K(bytes, count);
    case GGMLQuantizationType.Q6_K:
      return decodeQ6K(bytes, count);
    default:
      throw new RangeError(
        `tensor type ${ggmlTypeName(type)} is not supported (supported: ${DECODABLE_TYPES.map(ggmlTypeName).join(', ')})`,
      );
  }
}

function copyUint16(view: DataView, count: number): Uint16Array {
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) out[i] = view.getUint16(i * 2, true);
  return out;
}

const half = fromHalfBits;

function decodeQ8_0(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < count / 32; b++) {
    const at = b * 34;
    const d = half(bytes[at]! | (bytes[at + 1]! << 8));
    for (let j = 0; j < 32; j++) out[b * 32 + j] = signed[at + 2 + j]! * d;
  }
  return out;
}

function decodeQ4_0(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let b = 0; b < count / 32; b++) {
    const at = b * 18;
    const d = half(bytes[at]! | (bytes[at + 1]! << 8));
    for (let j = 0; j < 16; j++) {
      const packed = bytes[at + 2 + j]!;
      out[b * 32 + j] = ((packed & 0x0f) - 8) * d;
      out[b * 32 + j + 16] = ((packed >> 4) - 8) * d;
    }
  }
  return out;
}

/** Q4_1: fp16 d, fp16 m, 16 bytes of nibbles (j low, j+16 high); value = n·d + m. */
function decodeQ4_1(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let b = 0; b < count / 32; b++) {
    const at = b * 20;
    const d = half(bytes[at]! | (bytes[at + 1]! << 8));
    const m = half(bytes[at + 2]! | (bytes[at + 3]! << 8));
    for (let j = 0; j < 16; j++) {
      const packed = bytes[at + 4 + j]!;
      out[b * 32 + j] = (packed & 0x0f) * d + m;
      out[b * 32 + j + 16] = (packed >> 4) * d + m;
    }
  }
  return out;
}

/**
 * Q5_0 (fp16 d, 32 high bits, 16 bytes of nibbles; value = (n − 16)·d) and Q5_1 (fp16 d, fp16 m,
 * the same; value = n·d + m). Bit j of the 32-bit word is the fifth bit of element j.
 */
function decodeQ5(bytes: Uint8Array, count: number, hasMin: boolean): Float32Array {
  const out = new Float32Array(count);
  const blockBytes = hasMin ? 24 : 22;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < count / 32; b++) {
    const at = b * blockBytes;
    const d = half(bytes[at]! | (bytes[at + 1]! << 8));
    const m = hasMin ? half(bytes[at + 2]! | (bytes[at + 3]! << 8)) : 0;
    const highAt = at + (hasMin ? 4 : 2);
    const high = view.getUint32(highAt, true);
    const offset = hasMin ? 0 : 16;
    for (let j = 0; j < 16; j++) {
      const packed = bytes[highAt + 4 + j]!;
      const lo = (packed & 0x0f) | (((high >>> j) & 1) << 4);
      const hi = (packed >> 4) | (((high >>> (j + 16)) & 1) << 4);
      // Q5_0 adds no min: adding 0 would turn a −0 (zero code, negative d) into +0.
      out[b * 32 + j] = hasMin ? lo * d + m : (lo - offset) * d;
      out[b * 32 + j + 16] = hasMin ? hi * d + m : (hi - offset) * d;
    }
  }
  return out;
}

/**
 * Q2_K: 16 bytes of scales (low nibble scale, high nibble min, one per 16 values), 64 bytes of 2-bit
 * codes, fp16 d, fp16 dmin. Each 128-value half reads 32 code bytes four times, 2 bits further each.
 */
function decodeQ2K(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let b = 0; b < count / 256; b++) {
    const at = b * 84;
    const d = half(bytes[at + 80]! | (bytes[at + 81]! << 8));
    const dmin = half(bytes[at + 82]! | (bytes[at + 83]! << 8));
    let y = b * 256;
    let sub = 0;
    for (let h = 0; h < 2; h++) {
      const q = at + 16 + 32 * h;
      for (let shift = 0; shift < 8; shift += 2) {
        for (const base of [0, 16]) {
          const sc = bytes[at + sub++]!;
          const dl = d * (sc & 0x0f);
          const ml = dmin * (sc >> 4);
          for (let l = 0; l < 16; l++) out[y + l] = dl * ((bytes[q + base + l]! >> shift) & 3) - ml;
          y += 16;
        }
      }
    }
  }
  return out;
}

/** The 16 signed 6-bit scales of a Q3_K block, unpacked from its 12 bytes (value − 32). */
function q3kScales(bytes: Uint8Array, at: number): Int8Array {
  const scales = new Int8Array(16);
  for (let i = 0; i < 16; i++) {
    const low = i < 8 ? bytes[at + i]! & 0x0f : bytes[at + i - 8]! >> 4;
    const high = (bytes[at + 8 + (i % 4)]! >> (2 * Math.floor(i / 4))) & 3;
    scales[i] = (low | (high << 4)) - 32;
  }
  return scales;
}

/**
 * Q3_K: 32 bytes of high-bit masks, 64 bytes of 2-bit codes, 12 bytes of 6-bit scales, fp16 d.
 * value = d·scale·(q − 4·(high bit clear)), codes read as in Q2_K, the mask bit moving one per pass.
 */
function decodeQ3K(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let b = 0; b < count / 256; b++) {
    const at = b * 110;
    const d = half(bytes[at + 108]! | (bytes[at + 109]! << 8));
    const scales = q3kScales(bytes, at + 96);
    let y = b * 256;
    let sub = 0;
    let mask = 1;
    for (let h = 0; h < 2; h++) {
      const q = at + 32 + 32 * h;
      for (let shift = 0; shift < 8; shift += 2) {
        for (const base of [0, 16]) {
          const dl = d * scales[sub++]!;
          for (let l = 0; l < 16; l++) {
            const code = (bytes[q + base + l]! >> shift) & 3;
            const highSet = (bytes[at + base + l]! & mask) !== 0;
            out[y + l] = dl * (code - (highSet ? 0 : 4));
          }
          y += 16;
        }
        mask <<= 1;
      }
    }
  }
  return out;
}

/** Scale and min of Q4_K sub-block `j` (0..7) from the 12 packed bytes at `at`: 6 bits each. */
function q4kScaleMin(bytes: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [bytes[at + j]! & 63, bytes[at + j + 4]! & 63];
  const scale = (bytes[at + j + 4]! & 0x0f) | ((bytes[at + j - 4]! >> 6) << 4);
  const min = (bytes[at + j + 4]! >> 4) | ((bytes[at + j]! >> 6) << 4);
  return [scale, min];
}

function decodeQ4K(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let b = 0; b < count / 256; b++) {
    const at = b * 144;
    const d = half(bytes[at]! | (bytes[at + 1]! << 8));
    const dmin = half(bytes[at + 2]! | (bytes[at + 3]! << 8));
    const scalesAt = at + 4;
    let qAt = at + 16;
    let y = b * 256;
    // Four chunks of 64 values: 32 bytes whose low nibbles are sub-block 2c, high nibbles 2c+1.
    for (let chunk = 0; chunk < 4; chunk++) {
      const [s1, m1] = q4kScaleMin(bytes, scalesAt, 2 * chunk);
      const [s2, m2] = q4kScaleMin(bytes, scalesAt, 2 * chunk + 1);
      for (let l = 0; l < 32; l++) out[y + l] = d * s1 * (bytes[qAt + l]! & 0x0f) - dmin * m1;
      for (let l = 0; l < 32; l++) out[y + 32 + l] = d * s2 * (bytes[qAt + l]! >> 4) - dmin * m2;
      qAt += 32;
      y += 64;
    }
  }
  return out;
}

/** Q5_K: Q4_K's layout with 32 bytes of fifth bits after the scales (bit 2c / 2c+1 for chunk c). */
function decodeQ5K(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let b = 0; b < count / 256; b++) {
    const at = b * 176;
    const d = half(bytes[at]! | (bytes[at + 1]! << 8));
    const dmin = half(bytes[at + 2]! | (bytes[at + 3]! << 8));
    const scalesAt = at + 4;
    const highAt = at + 16;
    let qAt = at + 48;
    let y = b * 256;
    for (let chunk = 0; chunk < 4; chunk++) {
      const [s1, m1] = q4kScaleMin(bytes, scalesAt, 2 * chunk);
      const [s2, m2] = q4kScaleMin(bytes, scalesAt, 2 * chunk + 1);
      const bitLow = 1 << (2 * chunk);
      const bitHigh = 1 << (2 * chunk + 1);
      for (let l = 0; l < 32; l++) {
        const high = bytes[highAt + l]!;
        out[y + l] = d * s1 * ((bytes[qAt + l]! & 0x0f) + (high & bitLow ? 16 : 0)) - dmin * m1;
        out[y + 32 + l] = d * s2 * ((bytes[qAt + l]! >> 4) + (high & bitHigh ? 16 : 0)) - dmin * m2;
      }
      qAt += 32;
      y += 64;
    }
  }
  return out;
}

function decodeQ6K(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const signed = new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < count / 256; b++) {
    const at = b * 210;
    const d = half(bytes[at + 208]! | (bytes[at + 209]! << 8));
    // Two halves of 128 values, each with 64 bytes of low nibbles, 32 of high bits and 8 scales.
    for (let h = 0; h < 2; h++) {
      const ql = at + 64 * h;
      const qh = at + 128 + 32 * h;
      const sc = at + 192 + 8 * h;
      const y = b * 256 + 128 * h;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const high = bytes[qh + l]!;
        const q1 = ((bytes[ql + l]! & 0x0f) | ((high & 3) << 4)) - 32;
        const q2 = ((bytes[ql + l + 32]! & 0x0f) | (((high >> 2) & 3) << 4)) - 32;
        const q3 = ((bytes[ql + l]! >> 4) | (((high >> 4) & 3) << 4)) - 32;
        const q4 = ((bytes[ql + l + 32]! >> 4) | (((high >> 6) & 3) << 4)) - 32;
        out[y + l] = d * signed[sc + is]! * q1;
        out[y + l + 32] = d * signed[sc + is + 2]! * q2;
        out[y + l + 64] = d * signed[sc + is + 4]! * q3;
        out[y + l + 96] = d * signed[sc + is + 6]! * q4;
      }
    }
  }
  return out;
}

/** Little-endian fp16 bytes of the values (round to nearest even). */
export function encodeF16(values: Float32Array): Uint8Array {
  const half = toHalfArray(values);
  return new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
}

/**
 * Round-to-nearest Q8_0, as ggml's reference quantizer: d = max|x| / 127 stored as fp16,
 * q = round(x / d). values.length must be a multiple of 32.
 */
export function encodeQ8_0(values: Float32Array): Uint8Array {
  const blocks = values.length / 32;
  const out = new Uint8Array(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(values[b * 32 + j]!));
    const d = amax / 127;
    const inverse = d === 0 ? 0 : 1 / d;
    const bits = toHalfBits(d);
    out[b * 34] = bits & 0xff;
    out[b * 34 + 1] = bits >> 8;
    for (let j = 0; j < 32; j++) {
      out[b * 34 + 2 + j] = Math.round(values[b * 32 + j]! * inverse) & 0xff;
    }
  }
  return out;
}

/**
 * Round-to-nearest Q4_0, as ggml's reference quantizer: the value of largest magnitude maps to
 * −8, so d = that value / −8; nibbles are clamped to 0..15.
 */
export function encodeQ4_0(values: Float32Array): Uint8Array {
  const blocks = values.length / 32;
  const out = new Uint8Array(blocks * 18);
  for (let b = 0; b < blocks; b++) {
    let extreme = 0;
    for (let j = 0; j < 32; j++) {
      const v = values[b * 32 + j]!;
      if (Math.abs(v) > Math.abs(extreme)) extreme = v;
    }
    const d = extreme / -8;
    const inverse = d === 0 ? 0 : 1 / d;
    const bits = toHalfBits(d);
    out[b * 18] = bits & 0xff;
    out[b * 18 + 1] = bits >> 8;
    const nibble = (v: number) => Math.min(15, Math.trunc(v * inverse + 8.5));
    for (let j = 0; j < 16; j++) {
      out[b * 18 + 2 + j] = nibble(values[b * 32 + j]!) | (nibble(values[b * 32 + j + 16]!) << 4);
    }
  }
  return out;
}
