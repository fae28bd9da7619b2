import { afterAll, describe, expect, it } from 'vitest';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import { dropMask, ReferenceModel } from '../reference/forward.ts';
import { ModelSession } from './model-session.ts';
import { JsKvCache, maxAbsDiff, runAndCache } from './testing/js-kv-cache.ts';

const config = syntheticConfig({
  dim: 32,
  hiddenDim: 48,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 64,
  maxSeqLen: 32,
});
const weights = syntheticWeights(config, 8);
const mask = dropMask(3, [1]);

describe('ModelSession', () => {
  const session = ModelSession.create(config, weights);
  afterAll(async () => (await session).release());

  it('continues a prompt in chunks (B=1, several tokens with past) like the reference', async () => {
    const s = await session;
    const reference = new ReferenceModel(config, weights);
    const cache = new JsKvCache(config, 1, 20, mask.attnKeep);
    let worst = 0;
    for (const chunk of [[1, 4, 9, 16], [25, 36, 49], [2], [3, 5]]) {
      const graphLogits = await runAndCache(s, cache, [chunk], mask);
      const refLogits = reference.forward(chunk, mask);
      graphLogits.forEach((g, i) => {
        worst = Math.max(worst, maxAbsDiff(g, refLogits[i]!));
      });
    }
    expect(cache.lengths).toEqual([10]);
    expect(worst).toBeLessThanOrEqual(1e-4);

    // The rows the graph handed back (K after RoPE, V) are the reference's cache, position by position.
    const { numKvHeads, headDim } = config;
    let kvWorst = 0;
    for (const l of [0, 2]) {
      const rows = reference.kvCache(l)!;
      for (let pos = 0; pos < 10; pos++) {
        for (let h = 0; h < numKvHeads; h++) {
          const at = (h * cache.capacity + pos) * headDim;
          const want = (r: Float64Array) => r.subarray(h * headDim, (h + 1) * headDim);
          kvWorst = Math.max(
            kvWorst,
            maxAbsDiff(cache.layers[l]!.key.subarray(at, at + headDim), want(rows.keys[pos]!)),
            maxAbsDiff(cache.layers[l]!.value.subarray(at, at + headDim), want(rows.values[pos]!)),
          );
        }
      }
    }
    expect(kvWorst).toBeLessThanOrEqual(1e-5);
  });

  it('returns K/V rows only for kept layers, and no logits when none are asked for', async () => {
    const s = await session;
    const cache = new JsKvCache(config, 1, 8, mask.attnKeep);
    const output = await s.run({
      batchSize: 1,
      seqLen: 3,
      inputIds: [1, 2, 3],
      positionIds: [0, 1, 2],
      mask,
      pastLengths: [0],
      past: cache.layers,
      pastCapacity: cache.capacity,
      logitsIndex: [],
    });
    expect(output.logits).toHaveLength(0);
    expect(output.newKeys.map((k) => k?.length ?? null)).toEqual([3 * 16, null, 3 * 16]); // S · kvH · D
    expect(output.newValues[1]).toBeNull();
    expect(output.hiddenStates).toBeUndefined();
  });

  it('rejects malformed input with a coded error before running', async () => {
    const s = await session;
    const cache = new JsKvCache(config, 1, 8, [true, true, true]); // layer 1 has past, but the mask drops it
    const input = {
      batchSize: 1,
      seqLen: 1,
      inputIds: [1],
      positionIds: [0],
      mask,
      pastLengths: [0],
      past: cache.layers,
      pastCapacity: 8,
      logitsIndex: [0],
    };
    await expect(s.run(input)).rejects.toMatchObject({ code: 'DS_INVALID_ARGUMENT' });
  });

  it('refuses a model GroupQueryAttention cannot run, with DS_UNSUPPORTED', async () => {
    const odd = syntheticConfig({
      dim: 24,
      hiddenDim: 32,
      numLayers: 1,
      numHeads: 2,
      numKvHeads: 1,
      vocabSize: 16,
    }); // head_dim 12
    await expect(ModelSession.create(odd, syntheticWeights(odd, 1))).rejects.toMatchObject({
      code: 'DS_UNSUPPORTED',
    });
  });
});
