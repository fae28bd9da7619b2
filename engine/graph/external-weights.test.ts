import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { loadLlama2cCheckpoint } from '../model/llama2c-loader.ts';
import { syntheticModel } from '../model/synthetic.ts';
import { buildModelGraph, buildModelGraphWithExternalWeights } from './build-graph.ts';
import type { ForwardInput } from './io.ts';
import { ModelSession } from './model-session.ts';

describe('weights as in-memory external data', () => {
  const { config, weights } = syntheticModel({
    numLayers: 2,
    dim: 64,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
  });

  it('keeps the protobuf small: the weight bytes travel beside it, as views of the weight arrays', () => {
    const inline = buildModelGraph(config, weights);
    const { model, externalData } = buildModelGraphWithExternalWeights(config, weights);
    const externalBytes = externalData.reduce((s, f) => s + f.data.byteLength, 0);
    expect(model.byteLength).toBeLessThan(inline.byteLength / 10);
    expect(model.byteLength + externalBytes).toBeGreaterThan(inline.byteLength * 0.95);
    // No copy: the embedding file is the embedding array's own memory.
    expect(externalData.some((f) => f.data.buffer === weights.tokenEmbedding.buffer)).toBe(true);
    expect(new Set(externalData.map((f) => f.path)).size).toBe(externalData.length);
  });

  it('gives exactly the logits of the inlined model', async () => {
    const inline = await ort.InferenceSession.create(buildModelGraph(config, weights));
    const { model, externalData } = buildModelGraphWithExternalWeights(config, weights);
    const external = await ort.InferenceSession.create(model, { externalData });
    const L = config.numLayers;
    const past = (b: number) =>
      new ort.Tensor('float32', new Float32Array(0), [b, config.numKvHeads, 0, config.headDim]);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from([1n, 72n, 101n, 108n]), [1, 4]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n, 3n]), [1, 4]),
      attn_keep: new ort.Tensor('bool', Uint8Array.from([1, 0]), [L]),
      mlp_keep: new ort.Tensor('bool', Uint8Array.from([1, 1]), [L]),
      attn_lowrank: new ort.Tensor('bool', new Uint8Array(L), [L]),
      mlp_lowrank: new ort.Tensor('bool', new Uint8Array(L), [L]),
      attn_emul_bias: new ort.Tensor('float32', new Float32Array(L * config.dim), [L, config.dim]),
      mlp_emul_bias: new ort.Tensor('float32', new Float32Array(L * config.dim), [L, config.dim]),
      attn_emul_down: new ort.Tensor('float32', new Float32Array(0), [L, config.dim, 0]),
      mlp_emul_down: new ort.Tensor('float32', new Float32Array(0), [L, config.dim, 0]),
      attn_emul_up: new ort.Tensor('float32', new Float32Array(0), [L, 0, config.dim]),
      mlp_emul_up: new ort.Tensor('float32', new Float32Array(0), [L, 0, config.dim]),
      seqlens_k: new ort.Tensor('int32', Int32Array.from([3]), [1]),
      total_sequence_length: new ort.Tensor('int32', Int32Array.from([4]), []),
      logits_index: new ort.Tensor('int64', BigInt64Array.from([0n, 3n]), [2]),
    };
    for (let l = 0; l < L; l++) {
      feeds[`past_key_${l}`] = past(1);
      feeds[`past_value_${l}`] = past(1);
    }
    const a = (await inline.run(feeds, ['logits'])).logits!.data as Float32Array;
    const b = (await external.run(feeds, ['logits'])).logits!.data as Float32Array;
    expect(a.length).toBe(2 * config.vocabSize);
    expect(Array.from(b)).toEqual(Array.from(a));
    await inline.release();
    await external.release();
  });
});

describe('weights mapped from the llama2.c checkpoint file', () => {
  const file = fileURLToPath(new URL('../../models/stories260K/stories260K.bin', import.meta.url));

  it('points every weight at its offset in the file: no weight bytes in the protobuf or beside it', () => {
    const { config, weights, weightFile } = loadLlama2cCheckpoint(file);
    expect(weightFile).toBeDefined();
    const { model, externalData } = buildModelGraphWithExternalWeights(config, weights, { weightFile });
    expect(externalData).toEqual([]);
    // What stays inline is the RoPE tables and a few int64 constants, not the 1 MB of weights.
    const ropeBytes = 2 * config.maxSeqLen * (config.headDim / 2) * 4;
    expect(model.byteLength).toBeLessThan(ropeBytes + 64 * 1024);
  });

  it('gives exactly the logits of the in-memory weights, prefill and a decode step', async () => {
    const { config, weights, weightFile } = loadLlama2cCheckpoint(file);
    const mapped = await ModelSession.create(config, weights, { weightFile });
    const inMemory = await ModelSession.create(config, weights);
    const L = config.numLayers;
    const mask = { attnKeep: Array(L).fill(true), mlpKeep: Array(L).fill(true) };
    const empty = () => ({ key: new Float32Array(0), value: new Float32Array(0) });
    const prefill: ForwardInput = {
      batchSize: 1,
      seqLen: 5,
      inputIds: [1, 403, 407, 261, 378],
      positionIds: [0, 1, 2, 3, 4],
      mask,
      pastLengths: [0],
      past: Array.from({ length: L }, empty),
      pastCapacity: 0,
      logitsIndex: [4],
    };
    const [a, b] = [await mapped.run(prefill), await inMemory.run(prefill)];
    expect(a.logits.length).toBe(config.vocabSize);
    expect(Array.from(a.logits)).toEqual(Array.from(b.logits));
    const decode: ForwardInput = {
      ...prefill,
      seqLen: 1,
      inputIds: [407],
      positionIds: [5],
      pastLengths: [5],
      past: a.newKeys.map((key, l) => ({ key: key!, value: a.newValues[l]! })),
      pastCapacity: 5,
      logitsIndex: [0],
    };
    const [c, d] = [await mapped.run(decode), await inMemory.run(decode)];
    expect(Array.from(c.logits)).toEqual(Array.from(d.logits));
    await mapped.release();
    await inMemory.release();
  });
});
