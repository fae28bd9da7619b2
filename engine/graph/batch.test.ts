import { afterAll, describe, expect, it } from 'vitest';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import { dropMask, fullMask, ReferenceModel } from '../reference/forward.ts';
import type { SublayerMask } from './io.ts';
import { ModelSession } from './model-session.ts';
import { argmax, JsKvCache, maxAbsDiff, runAndCache } from './testing/js-kv-cache.ts';

const config = syntheticConfig({
  dim: 64,
  hiddenDim: 96,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 128,
  maxSeqLen: 64,
});
const weights = syntheticWeights(config, 31);
const PROMPTS = [
  [1, 5, 9],
  [1, 20, 21, 22, 23, 24, 25],
  [1, 60, 61, 62, 63],
];
const CAPACITY = 32;

describe('batched decode (B=3, rows of different lengths)', () => {
  const session = ModelSession.create(config, weights);
  afterAll(async () => (await session).release());

  it.each<[string, SublayerMask]>([
    ['full', fullMask(3)],
    ['attention 1 and MLP 2 dropped', dropMask(3, [1], [2])],
  ])('equals each row decoded alone, %s', async (_, mask) => {
    const s = await session;
    // Each row prefilled on its own, as a scheduler admits requests one by one.
    const alone = PROMPTS.map(() => new JsKvCache(config, 1, CAPACITY, mask.attnKeep));
    const next: number[] = [];
    for (const [b, prompt] of PROMPTS.entries()) {
      const logits = await runAndCache(s, alone[b]!, [prompt], mask);
      next.push(argmax(logits[logits.length - 1]!));
    }
    const batch = new JsKvCache(config, 3, CAPACITY, mask.attnKeep);
    alone.forEach((row, b) => {
      batch.copyRowFrom(row, 0, b);
    });
    expect(batch.lengths).toEqual([3, 7, 5]);

    const references = PROMPTS.map((p) => {
      const r = new ReferenceModel(config, weights);
      r.forward(p, mask);
      return r;
    });
    let batchVsAlone = 0;
    let batchVsReference = 0;
    for (let step = 0; step < 6; step++) {
      const batched = await runAndCache(
        s,
        batch,
        next.map((t) => [t]),
        mask,
      );
      for (let b = 0; b < 3; b++) {
        const [single] = await runAndCache(s, alone[b]!, [[next[b]!]], mask);
        const [reference] = references[b]!.forward([next[b]!], mask);
        batchVsAlone = Math.max(batchVsAlone, maxAbsDiff(batched[b]!, single!));
        batchVsReference = Math.max(batchVsReference, maxAbsDiff(batched[b]!, reference!));
        next[b] = argmax(single!);
      }
    }
    expect(batch.lengths).toEqual([9, 13, 11]);
    expect(batchVsAlone).toBeLessThanOrEqual(1e-5);
    expect(batchVsReference).toBeLessThanOrEqual(1e-4);
  });

  it('runs a batch prefill when every row starts empty', async () => {
    const s = await session;
    const mask = fullMask(3);
    const prompts = [
      [1, 2, 3, 4],
      [1, 9, 8, 7],
    ];
    const batch = new JsKvCache(config, 2, CAPACITY, mask.attnKeep);
    const logits = await runAndCache(s, batch, prompts, mask);
    for (const [b, prompt] of prompts.entries()) {
      const reference = new ReferenceModel(config, weights).forward(prompt, mask);
      reference.forEach((r, i) => {
        expect(maxAbsDiff(logits[b * 4 + i]!, r)).toBeLessThanOrEqual(1e-4);
      });
    }
  });
});
