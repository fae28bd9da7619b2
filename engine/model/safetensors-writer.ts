import fs from 'node:fs';

/**
 * Minimal safetensors writer (F32 or BF16), used to build sharded test fixtures and to export
 * models. BF16 rounds to nearest even, as PyTorch's float32 → bfloat16 conversion does.
 */

export type WritableDtype = 'F32' | 'BF16';

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

export function writeSafetensorsFile(
  file: string,
  tensors: readonly TensorToWrite[],
  options: { dtype?: WritableDtype; metadata?: Record<string, string> } = {},
): void {
  const dtype = options.dtype ?? 'F32';
  const bytesPerElement = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = {};
  if (options.metadata) header.__metadata__ = options.metadata;
  let offset = 0;
  for (const t of tensors) {
    const numElements = t.shape.reduce((a, d) => a * d, 1);
    if (numElements !== t.data.length) {
      throw new RangeError(
        `tensor "${t.name}": shape [${t.shape}] holds ${numElements} values, data has ${t.data.length}`,
      );
    }
    const byteLength = numElements * bytesPerElement;
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + byteLength] };
    offset += byteLength;
  }
  // The format pads the header with spaces so the data section starts 8-byte aligned.
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - ((8 + Buffer.byteLength(headerText)) % 8)) % 8);
  const headerBuf = Buffer.from(headerText, 'utf8');
  const lengthBuf = Buffer.alloc(8);
  lengthBuf.writeBigUInt64LE(BigInt(headerBuf.length));
  const parts: Uint8Array[] = [lengthBuf, headerBuf];
  for (const t of tensors) {
    const encoded = dtype === 'F32' ? t.data.slice() : float32ToBf16(t.data);
    parts.push(new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength));
  }
  fs.writeFileSync(file, Buffer.concat(parts));
}

/** float32 → bfloat16 bits, round to nearest even (NaN kept as a quiet NaN). */
export function float32ToBf16(data: Float32Array): Uint16Array {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const b = bits[i]!;
    if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) {
      out[i] = (b >>> 16) | 0x40;
      continue;
    }
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return out;
}
