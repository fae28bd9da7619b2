import fs from 'node:fs';
import path from 'node:path';
import { DropserveError, modelLoadError } from '../errors.ts';

/**
 * Reader for the safetensors format:
 *
 *   [u64 LE headerBytes][JSON header, headerBytes long][data]
 *   header = { "__metadata__"?: {str: str}, name: { dtype, shape, data_offsets: [begin, end] }, … }
 *
 * Offsets are relative to the start of the data section. Tensors are read lazily, one at a time,
 * straight from the file into a fresh Float32Array (F16/BF16 are widened), so a model never needs
 * a second full copy in memory. A directory may hold one `model.safetensors` or shards listed by
 * `model.safetensors.index.json` (`weight_map`: tensor name → shard file).
 *
 * NOTE: assumes a little-endian host (x64, arm64), as safetensors data is little-endian.
 */

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Shard file the tensor lives in. */
  file: string;
  /** Absolute byte offset of the first element in `file`. */
  byteOffset: number;
  byteLength: number;
}

export interface SafetensorsReader {
  /** Every tensor name, in header order (shard by shard). */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** Reads one tensor as float32; with expectedShape, a mismatch is a DS_MODEL_LOAD error. */
  get(name: string, expectedShape?: readonly number[]): Float32Array;
  /** `__metadata__` of every shard merged (first shard wins on a clash). */
  readonly metadata: Readonly<Record<string, string>>;
  /** The files read: one, or the shards. */
  readonly files: readonly string[];
}

const BYTES_PER_ELEMENT: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** Every dtype the format defines; tensors of the other ones parse but cannot be read. */
const KNOWN_DTYPES = new Map<string, number>([
  ['F64', 8],
  ['F32', 4],
  ['F16', 2],
  ['BF16', 2],
  ['I64', 8],
  ['I32', 4],
  ['I16', 2],
  ['I8', 1],
  ['U64', 8],
  ['U32', 4],
  ['U16', 2],
  ['U8', 1],
  ['BOOL', 1],
  ['F8_E4M3', 1],
  ['F8_E5M2', 1],
]);
/** A header larger than this is a corrupt length field, not a real header. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export const SINGLE_FILE_NAME = 'model.safetensors';
export const INDEX_FILE_NAME = 'model.safetensors.index.json';

interface ParsedTensor {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
  byteOffset: number;
  byteLength: number;
}

interface ParsedFile {
  tensors: ParsedTensor[];
  metadata: Record<string, string>;
}

/** Opens a single .safetensors file, or a directory holding one or a sharded set with its index. */
export function openSafetensors(fileOrDir: string): SafetensorsReader {
  if (!fs.existsSync(fileOrDir)) throw modelLoadError(fileOrDir, 'no such file or directory');
  if (fs.statSync(fileOrDir).isFile()) return buildReader([parseSafetensorsFile(fileOrDir)], [fileOrDir]);
  const indexPath = path.join(fileOrDir, INDEX_FILE_NAME);
  if (fs.existsSync(indexPath)) {
    const shardFiles = readIndex(indexPath).map((f) => path.join(fileOrDir, f));
    const parsed = shardFiles.map(parseSafetensorsFile);
    const reader = buildReader(parsed, shardFiles);
    checkIndexAgainstShards(indexPath, fileOrDir, reader);
    return reader;
  }
  const single = path.join(fileOrDir, SINGLE_FILE_NAME);
  if (fs.existsSync(single)) return buildReader([parseSafetensorsFile(single)], [single]);
  throw modelLoadError(fileOrDir, `neither ${SINGLE_FILE_NAME} nor ${INDEX_FILE_NAME} found`);
}

/** Parses the header of one file and checks every tensor's extent against the file size. */
export function parseSafetensorsFile(file: string): ParsedFile {
  if (!fs.existsSync(file)) throw modelLoadError(file, 'no such file');
  const fileBytes = fs.statSync(file).size;
  if (fileBytes < 8)
    throw modelLoadError(file, `file is ${fileBytes} bytes, shorter than the 8-byte header length`);
  const fd = fs.openSync(file, 'r');
  let headerText: string;
  let headerBytes: number;
  try {
    const lengthBuf = Buffer.alloc(8);
    fs.readSync(fd, lengthBuf, 0, 8, 0);
    const declared = lengthBuf.readBigUInt64LE(0);
    if (declared > BigInt(Math.min(MAX_HEADER_BYTES, fileBytes - 8))) {
      throw modelLoadError(
        file,
        `header length field says ${declared} bytes but the file has only ${fileBytes - 8} bytes after it ` +
          `(limit ${MAX_HEADER_BYTES}): truncated or not a safetensors file`,
      );
    }
    headerBytes = Number(declared);
    const headerBuf = Buffer.alloc(headerBytes);
    fs.readSync(fd, headerBuf, 0, headerBytes, 8);
    headerText = headerBuf.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText);
  } catch (e) {
    throw modelLoadError(file, `header is not valid JSON (${(e as Error).message})`, e);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw modelLoadError(file, 'header is not a JSON object');
  }
  const dataStart = 8 + headerBytes;
  const dataBytes = fileBytes - dataStart;
  const tensors: ParsedTensor[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, entry);
      continue;
    }
    tensors.push(parseTensorEntry(file, name, entry, dataStart, dataBytes));
  }
  return { tensors, metadata };
}

function parseMetadata(file: string, entry: unknown): Record<string, string> {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    throw modelLoadError(file, '__metadata__ is not an object of strings');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry)) out[k] = String(v);
  return out;
}

function parseTensorEntry(
  file: string,
  name: string,
  entry: unknown,
  dataStart: number,
  dataBytes: number,
): ParsedTensor {
  const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  const where = `tensor "${name}"`;
  if (typeof e !== 'object' || e === null)
    throw modelLoadError(file, `${where}: header entry is not an object`);
  if (typeof e.dtype !== 'string' || !KNOWN_DTYPES.has(e.dtype)) {
    throw modelLoadError(file, `${where}: unknown dtype ${JSON.stringify(e.dtype)}`);
  }
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw modelLoadError(
      file,
      `${where}: shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`,
    );
  }
  const offsets = e.data_offsets;
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[1] < offsets[0]
  ) {
    throw modelLoadError(file, `${where}: data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
  }
  const [begin, end] = offsets as [number, number];
  const shape = e.shape as number[];
  const expectedBytes = shape.reduce((a, d) => a * d, 1) * KNOWN_DTYPES.get(e.dtype)!;
  if (end - begin !== expectedBytes) {
    throw modelLoadError(
      file,
      `${where}: ${e.dtype}${JSON.stringify(shape)} needs ${expectedBytes} bytes but data_offsets ` +
        `[${begin}, ${end}] span ${end - begin}`,
    );
  }
  if (end > dataBytes) {
    throw modelLoadError(
      file,
      `${where}: data ends at byte ${dataStart + end} but the file has ${dataStart + dataBytes} bytes (truncated?)`,
    );
  }
  return { name, dtype: e.dtype, shape, file, byteOffset: dataStart + begin, byteLength: end - begin };
}

function readIndex(indexPath: string): string[] {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw modelLoadError(indexPath, `cannot read index JSON (${(e as Error).message})`, e);
  }
  const weightMap = (index as { weight_map?: unknown }).weight_map;
  if (typeof weightMap !== 'object' || weightMap === null) {
    throw modelLoadError(indexPath, 'has no "weight_map" object');
  }
  const shards = new Set<string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string')
      throw modelLoadError(indexPath, `weight_map["${name}"] is not a file name`);
    shards.add(shard);
  }
  if (shards.size === 0) throw modelLoadError(indexPath, 'weight_map is empty');
  return [...shards];
}

/** Every name in the index must be in the shard it points to. */
function checkIndexAgainstShards(indexPath: string, dir: string, reader: SafetensorsReader): void {
  const weightMap = (JSON.parse(fs.readFileSync(indexPath, 'utf8')) as { weight_map: Record<string, string> })
    .weight_map;
  for (const [name, shard] of Object.entries(weightMap)) {
    if (!reader.has(name)) {
      throw modelLoadError(
        indexPath,
        `lists tensor "${name}" in ${shard}, but that shard has no such tensor`,
      );
    }
    const actual = path.relative(dir, reader.info(name).file);
    if (actual !== shard) {
      throw modelLoadError(indexPath, `lists tensor "${name}" in ${shard}, but it was found in ${actual}`);
    }
  }
}

function buildReader(parsedFiles: ParsedFile[], files: string[]): SafetensorsReader {
  const byName = new Map<string, ParsedTensor>();
  const metadata: Record<string, string> = {};
  for (const parsed of parsedFiles) {
    for (const t of parsed.tensors) {
      const previous = byName.get(t.name);
      if (previous) throw modelLoadError(t.file, `tensor "${t.name}" also appears in ${previous.file}`);
      byName.set(t.name, t);
    }
    for (const [k, v] of Object.entries(parsed.metadata)) if (!(k in metadata)) metadata[k] = v;
  }
  const lookup = (name: string): ParsedTensor => {
    const t = byName.get(name);
    if (!t) throw modelLoadError(files.join(', '), `no tensor named "${name}"`);
    return t;
  };
  return {
    names: () => [...byName.keys()],
    has: (name) => byName.has(name),
    info: (name) => toInfo(lookup(name)),
    get: (name, expectedShape) => {
      const t = lookup(name);
      if (expectedShape && !sameShape(t.shape, expectedShape)) {
        throw modelLoadError(
          t.file,
          `tensor "${name}" has shape [${t.shape.join(', ')}], expected [${expectedShape.join(', ')}]`,
        );
      }
      return readTensor(toInfo(t));
    },
    metadata,
    files,
  };
}

function toInfo(t: ParsedTensor): TensorInfo {
  if (!(t.dtype in BYTES_PER_ELEMENT)) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${t.file}: tensor "${t.name}" has dtype ${t.dtype}; only F32, F16 and BF16 can be loaded`,
    );
  }
  return { ...t, dtype: t.dtype as SafetensorsDtype };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function readTensor(t: TensorInfo): Float32Array {
  const numElements = t.byteLength / BYTES_PER_ELEMENT[t.dtype];
  const fd = fs.openSync(t.file, 'r');
  try {
    if (t.dtype === 'F32') {
      const out = new Float32Array(numElements);
      readFully(fd, new Uint8Array(out.buffer), t);
      return out;
    }
    const half = new Uint16Array(numElements);
    readFully(fd, new Uint8Array(half.buffer), t);
    return t.dtype === 'BF16' ? bf16ToFloat32(half) : f16ToFloat32(half);
  } finally {
    fs.closeSync(fd);
  }
}

function readFully(fd: number, target: Uint8Array, t: TensorInfo): void {
  let done = 0;
  while (done < target.length) {
    const n = fs.readSync(fd, target, done, target.length - done, t.byteOffset + done);
    if (n === 0) {
      throw modelLoadError(t.file, `tensor "${t.name}": file ended after ${done} of ${target.length} bytes`);
    }
    done += n;
  }
}

/** bf16 is the top half of a float32. */
export function bf16ToFloat32(half: Uint16Array): Float32Array {
  const bits = new Uint32Array(half.length);
  for (let i = 0; i < half.length; i++) bits[i] = half[i]! << 16;
  return new Float32Array(bits.buffer);
}

let f16Table: Float32Array | undefined;

/** IEEE half → float32 through a 64K-entry table (256 KiB, built once). */
export function f16ToFloat32(half: Uint16Array): Float32Array {
  f16Table ??= buildF16Table();
  const out = new Float32Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = f16Table[half[i]!]!;
  return out;
}

function buildF16Table(): Float32Array {
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) table[h] = sign * mantissa * 2 ** -24;
    else if (exponent === 31) table[h] = mantissa ? Number.NaN : sign * Number.POSITIVE_INFINITY;
    else table[h] = sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return table;
}
