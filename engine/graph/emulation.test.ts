import { afterAll, describe, expect, it } from 'vitest';
import { SeededRandom } from '../model/random.ts';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import { dropMask, ReferenceModel } from '../reference/forward.ts';
import { packSublayerEmulation } from './emulation-feeds.ts';
import type { Emulation, SublayerMask } from './io.ts';
import { ModelSession } from './model-session.ts';
import { compareDecode } from './testing/compare-decode.ts';
import { JsKvCache, maxAbsDiff, runAndCache } from './testing/js-kv-cache.ts';

const config = syntheticConfig({
  dim: 32,
  hiddenDim: 64,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 96,
  maxSeqLen: 64,
});
const weights = syntheticWeights(config, 41);
const rng = new SeededRandom(5);
const dim = config.dim;
const PROMPT = [1, 30, 31, 8, 2, 60, 4];

const bias = () => rng.fillNormal(dim, 0.2);
const lowRank = (rank: number, withBias: boolean) => ({
  kind: 'lowrank' as const,
  rank,
  down: rng.fillNormal(dim * rank, 1 / Math.sqrt(dim)),
  up: rng.fillNormal(rank * dim, 0.5),
  ...(withBias ? { bias: bias() } : {}),
});

describe('emulated sublayers: graph matches reference', () => {
  const session = ModelSession.create(config, weights, { outputHiddenStates: true });
  afterAll(async () => (await session).release());

  const emulations: [string, SublayerMask][] = [
    [
      'bias on attention 1 and MLP 2',
      {
        ...dropMask(3, [1], [2]),
        emulation: {
          attention: [null, { kind: 'bias', bias: bias() }, null],
          mlp: [null, null, { kind: 'bias', bias: bias() }],
        },
      },
    ],
    [
      'rank-2 low-rank on attention 0, rank-1 + bias on MLP 1, bias on attention 2',
      {
        ...dropMask(3, [0, 2], [1]),
        emulation: {
          attention: [lowRank(2, false), null, { kind: 'bias', bias: bias() }],
          mlp: [null, lowRank(1, true), null],
        },
      },
    ],
  ];

  it.each(emulations)('%s', async (_, mask) => {
    const s = await session;
    const emulated = await compareDecode(s, config, weights, { prompt: PROMPT, steps: 10, mask });
    expect(emulated.maxLogitDiff).toBeLessThanOrEqual(1e-4);
    // …and the emulation does something: the same drops without it give other logits.
    const plain = { attnKeep: mask.attnKeep, mlpKeep: mask.mlpKeep };
    const crossed = await compareDecode(s, config, weights, {
      prompt: PROMPT,
      steps: 0,
      mask,
      referenceMask: plain,
    });
    expect(crossed.maxLogitDiff).toBeGreaterThan(1e-2);
  });

  it('hidden states after every sublayer match the reference', async () => {
    const s = await session;
    const [, mask] = emulations[1]!;
    const reference = new ReferenceModel(config, weights);
    const cache = new JsKvCache(config, 1, 16, mask.attnKeep);
    for (const tokens of [PROMPT, [12]]) {
      reference.forward(tokens, mask);
      const pastLengths = [...cache.lengths];
      const output = await s.run({
        batchSize: 1,
        seqLen: tokens.length,
        inputIds: tokens,
        positionIds: tokens.map((_, i) => pastLengths[0]! + i),
        mask,
        pastLengths,
        past: cache.layers,
        pastCapacity: cache.capacity,
        logitsIndex: [tokens.length - 1],
        wantHiddenStates: true,
      });
      cache.append(output, tokens.length);
      expect(output.hiddenStates).toHaveLength(2 * config.numLayers + 1);
      const diffs = output.hiddenStates!.map((h, k) => maxAbsDiff(h, reference.hiddenStates[k]!));
      expect(Math.max(...diffs)).toBeLessThanOrEqual(1e-4);
    }
  });

  it('refuses hidden states from a session built without them', async () => {
    const plain = await ModelSession.create(config, weights);
    try {
      const mask = dropMask(3, []);
      const cache = new JsKvCache(config, 1, 8, mask.attnKeep);
      await expect(runAndCache(plain, cache, [[1]], mask)).resolves.toHaveLength(1);
      const input = {
        batchSize: 1,
        seqLen: 1,
        inputIds: [1],
        positionIds: [1],
        mask,
        pastLengths: [1],
        past: cache.layers,
        pastCapacity: 8,
        logitsIndex: [0],
        wantHiddenStates: true,
      };
      await expect(plain.run(input)).rejects.toMatchObject({ code: 'DS_INVALID_ARGUMENT' });
    } finally {
      await plain.release();
    }
  });
});

describe('packSublayerEmulation', () => {
  it('pads every layer to the largest rank with zeros and flags low-rank layers', () => {
    const small = {
      kind: 'lowrank' as const,
      rank: 1,
      down: Float32Array.from({ length: dim }, (_, i) => i + 1),
      up: new Float32Array(dim).fill(3),
    };
    const big = lowRank(2, true);
    const packed = packSublayerEmulation(config, [small, null, big] satisfies Emulation['mlp']);
    expect(packed.down.dims).toEqual([3, dim, 2]);
    expect(packed.up.dims).toEqual([3, 2, dim]);
    expect([...packed.isLowRank.data]).toEqual([1, 0, 1]);
    expect(packed.down.data[5 * 2]).toBe(6); // layer 0, row 5, column 0
    expect(packed.down.data[5 * 2 + 1]).toBe(0); // padding column
    expect(packed.up.data[dim]).toBe(0); // layer 0, padding row
    expect(packed.bias.data.subarray(2 * dim, 3 * dim)).toEqual(big.bias);
    expect(packed.down.data.subarray(2 * dim * 2, 3 * dim * 2)).toEqual(big.down);
  });

  it('has rank 0 when nothing is low-rank', () => {
    const packed = packSublayerEmulation(config, undefined);
    expect(packed.down.dims).toEqual([3, dim, 0]);
    expect(packed.bias.data.every((v) => v === 0)).toBe(true);
  });
});
