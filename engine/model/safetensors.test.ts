import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithAssets, itWithAssets, TINYSTORIES_656K } from '../../tests/support/shared-assets.ts';
import { errorOf } from '../testing/expect-dropserve-error.ts';
import { f16ToFloat32, openSafetensors } from './safetensors.ts';
import { float32ToBf16, writeSafetensorsFile } from './safetensors-writer.ts';

const TINY = TINYSTORIES_656K.path;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-st-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A file with a hand-written header, to test what the writer never produces. */
function writeRaw(file: string, header: unknown, dataBytes: number): void {
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([length, json, Buffer.alloc(dataBytes)]));
}

describeWithAssets([TINYSTORIES_656K], 'openSafetensors on tinystories-656K', () => {
  let reader: ReturnType<typeof openSafetensors>;
  beforeAll(() => {
    reader = openSafetensors(TINY);
  });

  it('lists tensors and the __metadata__ alias of the tied embedding', () => {
    expect(reader.names()).toHaveLength(20);
    expect(reader.has('lm_head.weight')).toBe(true);
    expect(reader.has('model.embed_tokens.weight')).toBe(false);
    expect(reader.metadata['model.embed_tokens.weight']).toBe('lm_head.weight');
    expect(reader.info('lm_head.weight')).toMatchObject({
      dtype: 'F32',
      shape: [2048, 128],
      byteLength: 2048 * 128 * 4,
    });
  });

  it('reads a tensor lazily and checks its shape', () => {
    const norm = reader.get('model.norm.weight', [128]);
    expect(norm).toHaveLength(128);
    expect(norm.every(Number.isFinite)).toBe(true);
    const e = errorOf(() => reader.get('model.norm.weight', [64]));
    expect(e.message).toContain('tensor "model.norm.weight" has shape [128], expected [64]');
    expect(e.message).toContain('model.safetensors');
  });
});

describe('dtype conversion', () => {
  it('reads F32 exactly and BF16 within bfloat16 rounding', () => {
    const data = Float32Array.from([0, 1, -2.5, Math.PI, 1e-8, -65504, 123456.789]);
    const file = path.join(tmp, 'dtypes.safetensors');
    writeSafetensorsFile(file, [{ name: 'x', shape: [7], data }]);
    expect(openSafetensors(file).get('x')).toEqual(data);
    writeSafetensorsFile(file, [{ name: 'x', shape: [7], data }], { dtype: 'BF16' });
    const bf = openSafetensors(file).get('x');
    for (let i = 0; i < data.length; i++)
      expect(Math.abs(bf[i]! - data[i]!)).toBeLessThanOrEqual(Math.abs(data[i]!) / 256);
    expect(bf[1]).toBe(1);
    expect(float32ToBf16(Float32Array.of(1 + 2 ** -8))[0]).toBe(0x3f80); // tie rounds to even
  });

  it('widens IEEE half floats, subnormals and infinities included', () => {
    const halves = Uint16Array.of(0x3c00, 0xc000, 0x3555, 0x0001, 0x7c00, 0xfc00, 0x0000);
    const f = f16ToFloat32(halves);
    expect(Array.from(f.slice(0, 2))).toEqual([1, -2]);
    expect(f[2]).toBeCloseTo(0.333251953125, 12);
    expect(f[3]).toBe(2 ** -24);
    expect(f[4]).toBe(Number.POSITIVE_INFINITY);
    expect(f[5]).toBe(Number.NEGATIVE_INFINITY);
    const file = path.join(tmp, 'f16.safetensors');
    const length = Buffer.alloc(8);
    const header = Buffer.from(JSON.stringify({ h: { dtype: 'F16', shape: [7], data_offsets: [0, 14] } }));
    length.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(file, Buffer.concat([length, header, Buffer.from(halves.buffer)]));
    expect(openSafetensors(file).get('h')).toEqual(f);
  });
});

describe('corrupt files', () => {
  itWithAssets([TINYSTORIES_656K], 'reports a truncated file with the byte counts', () => {
    const file = path.join(tmp, 'truncated.safetensors');
    fs.writeFileSync(file, fs.readFileSync(path.join(TINY, 'model.safetensors')).subarray(0, 1_500_000));
    const e = errorOf(() => openSafetensors(file));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toMatch(/data ends at byte \d+ but the file has 1500000 bytes \(truncated\?\)/);
  });

  itWithAssets([TINYSTORIES_656K], 'reports a header length beyond the file', () => {
    const file = path.join(tmp, 'header.safetensors');
    fs.writeFileSync(file, fs.readFileSync(path.join(TINY, 'model.safetensors')).subarray(0, 1000));
    expect(errorOf(() => openSafetensors(file)).message).toContain('header length field says 2160 bytes');
  });

  it('rejects offsets that disagree with dtype × shape, and garbage headers', () => {
    const file = path.join(tmp, 'bad.safetensors');
    writeRaw(file, { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, 24);
    expect(errorOf(() => openSafetensors(file)).message).toContain(
      'F32[2,3] needs 24 bytes but data_offsets [0, 20] span 20',
    );
    writeRaw(file, { w: { dtype: 'Q4', shape: [2], data_offsets: [0, 1] } }, 1);
    expect(errorOf(() => openSafetensors(file)).message).toContain('unknown dtype "Q4"');
    fs.writeFileSync(file, Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{oops')]));
    expect(errorOf(() => openSafetensors(file)).message).toContain('not valid JSON');
  });

  it('parses other dtypes but refuses to load them', () => {
    const file = path.join(tmp, 'i64.safetensors');
    writeRaw(file, { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, 16);
    const reader = openSafetensors(file);
    expect(reader.names()).toEqual(['ids']);
    expect(errorOf(() => reader.get('ids')).code).toBe('DS_UNSUPPORTED');
  });

  it('names a missing file or directory', () => {
    expect(errorOf(() => openSafetensors(path.join(tmp, 'missing'))).message).toContain(
      'no such file or directory',
    );
    const empty = path.join(tmp, 'empty-dir');
    fs.mkdirSync(empty);
    expect(errorOf(() => openSafetensors(empty)).message).toContain('neither model.safetensors nor');
  });
});

describe('sharded directories', () => {
  it('reads tensors across shards named by the index, and checks the index', () => {
    const dir = path.join(tmp, 'sharded');
    fs.mkdirSync(dir);
    const a = Float32Array.from([1, 2, 3, 4]);
    const b = Float32Array.from([0.5, -0.25]);
    writeSafetensorsFile(path.join(dir, 's1.safetensors'), [{ name: 'a', shape: [2, 2], data: a }]);
    writeSafetensorsFile(path.join(dir, 's2.safetensors'), [{ name: 'b', shape: [2], data: b }], {
      dtype: 'BF16',
    });
    const index = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ weight_map: { a: 's1.safetensors', b: 's2.safetensors' } }));
    const reader = openSafetensors(dir);
    expect(reader.files.map((f) => path.basename(f))).toEqual(['s1.safetensors', 's2.safetensors']);
    expect(reader.get('a', [2, 2])).toEqual(a);
    expect(reader.get('b')).toEqual(b);
    expect(reader.info('b').dtype).toBe('BF16');

    fs.writeFileSync(
      index,
      JSON.stringify({ weight_map: { a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' } }),
    );
    expect(errorOf(() => openSafetensors(dir)).message).toMatch(/lists tensor "(b|c)"/);
  });
});
