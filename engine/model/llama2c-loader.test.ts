import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { STORIES_260K, TOK512 } from '../../tests/support/shared-assets.ts';
import { errorOf } from '../testing/expect-dropserve-error.ts';
import { expectedFileBytes, loadLlama2cCheckpoint } from './llama2c-loader.ts';
import { countParameters } from './weights.ts';

const STORIES = STORIES_260K;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-llama2c-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A small version-0 checkpoint whose every float is its own index, so positions are checkable. */
function writeCountingCheckpoint(file: string, header: number[]): number {
  const h = {
    dim: header[0]!,
    hiddenDim: header[1]!,
    numLayers: header[2]!,
    numHeads: header[3]!,
    numKvHeads: header[4]!,
    vocabSize: header[5]!,
    seqLen: header[6]!,
  };
  const numFloats = (expectedFileBytes(h) - 28) / 4;
  const body = new Float32Array(numFloats).map((_, i) => i);
  fs.writeFileSync(
    file,
    Buffer.concat([Buffer.from(Int32Array.from(header).buffer), Buffer.from(body.buffer)]),
  );
  return numFloats;
}

describe('loadLlama2cCheckpoint on stories260K', () => {
  const { config, weights } = loadLlama2cCheckpoint(STORIES);

  it('reads the header into the config', () => {
    expect(config).toMatchObject({
      architecture: 'llama',
      dim: 64,
      hiddenDim: 172,
      numLayers: 5,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 8,
      vocabSize: 512,
      maxSeqLen: 512,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeInterleaved: true,
      tieWordEmbeddings: true,
      bosTokenId: 1,
      eosTokenIds: [1, 2],
    });
  });

  it('ties the classifier to the embedding and counts 260,032 weights (embedding once, norms in, RoPE tables out)', () => {
    expect(weights.lmHead).toBe(weights.tokenEmbedding);
    expect(countParameters(config, weights)).toBe(260_032);
    expect(weights.layers[0]!.wk.length).toBe(32 * 64);
    expect(weights.layers[4]!.wDown.length).toBe(64 * 172);
  });

  it('reads trained values: RMSNorm gains are positive and not all equal', () => {
    const gains = weights.finalNorm;
    expect(Math.min(...gains)).toBeGreaterThan(0);
    expect(new Set(gains).size).toBeGreaterThan(10);
  });
});

describe('loadLlama2cCheckpoint layout', () => {
  it('slices each tensor family per layer and finds an untied classifier after the RoPE tables', () => {
    const file = path.join(tmp, 'untied.bin');
    // dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab -5 (untied), seq_len 3
    const numFloats = writeCountingCheckpoint(file, [8, 12, 2, 2, 1, -5, 3]);
    const { config, weights } = loadLlama2cCheckpoint(file);
    expect(config.tieWordEmbeddings).toBe(false);
    expect(config.vocabSize).toBe(5);
    expect(weights.lmHead).not.toBe(weights.tokenEmbedding);
    // embedding 40 floats, rms_att 2×8, wq 2×64: layer 1's wq starts at 40 + 16 + 64
    expect(weights.layers[1]!.wq[0]).toBe(40 + 16 + 64);
    // wk [L, kvDim 4, dim 8]: layer 1 starts after wq (128) → 40 + 16 + 128 + 32
    expect(weights.layers[1]!.wk[0]).toBe(40 + 16 + 128 + 32);
    expect(weights.lmHead[0]).toBe(numFloats - 40);
    expect(weights.lmHead[39]).toBe(numFloats - 1);
  });
});

describe('loadLlama2cCheckpoint errors', () => {
  it('names a missing file', () => {
    const e = errorOf(() => loadLlama2cCheckpoint(path.join(tmp, 'nope.bin')));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toContain('nope.bin');
  });

  it('says expected vs found bytes for a truncated file', () => {
    const file = path.join(tmp, 'truncated.bin');
    fs.writeFileSync(file, fs.readFileSync(STORIES).subarray(0, 500_000));
    const e = errorOf(() => loadLlama2cCheckpoint(file));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toContain('1056540 bytes, found 500000');
    expect(e.message).toContain('truncated');
  });

  it('rejects trailing data', () => {
    const file = path.join(tmp, 'long.bin');
    fs.writeFileSync(file, Buffer.concat([fs.readFileSync(STORIES), Buffer.alloc(8)]));
    expect(errorOf(() => loadLlama2cCheckpoint(file)).message).toContain('found 1056548 (trailing data)');
  });

  it('rejects a nonsense header (a tokenizer file passed as the model)', () => {
    const e = errorOf(() => loadLlama2cCheckpoint(TOK512));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toContain('not a llama2.c checkpoint');
  });

  it('rejects heads that do not divide', () => {
    const file = path.join(tmp, 'heads.bin');
    fs.writeFileSync(file, Buffer.from(Int32Array.from([64, 172, 5, 8, 3, 512, 512]).buffer));
    expect(errorOf(() => loadLlama2cCheckpoint(file)).message).toContain(
      'n_heads 8 is not a multiple of n_kv_heads 3',
    );
  });

  it('reports newer export versions as unsupported', () => {
    const file = path.join(tmp, 'v1.bin');
    const header = Buffer.alloc(256);
    header.writeUInt32LE(0x616b3432, 0);
    header.writeInt32LE(1, 4);
    fs.writeFileSync(file, header);
    const e = errorOf(() => loadLlama2cCheckpoint(file));
    expect(e.code).toBe('DS_UNSUPPORTED');
    expect(e.message).toContain('version 1');
  });
});
