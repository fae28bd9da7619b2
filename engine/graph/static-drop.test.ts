import { afterAll, describe, expect, it } from 'vitest';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import { dropMask } from '../reference/forward.ts';
import type { SublayerMask } from './io.ts';
import { ModelSession } from './model-session.ts';
import { compareDecode } from './testing/compare-decode.ts';
import { JsKvCache, maxAbsDiff, runAndCache } from './testing/js-kv-cache.ts';

const config = syntheticConfig({
  dim: 64,
  hiddenDim: 96,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 128,
  maxSeqLen: 64,
});
const weights = syntheticWeights(config, 21);
const PROMPT = [1, 9, 8, 77, 3, 14, 50];

describe('masked graph with drops == statically pruned graph == reference', () => {
  const masked = ModelSession.create(config, weights);
  afterAll(async () => (await masked).release());

  const cases: [string, SublayerMask][] = [
    ['attention {1,3}', dropMask(4, [1, 3])],
    ['attention 0 and MLP {0,2}', dropMask(4, [0], [0, 2])],
  ];

  it.each(cases)('%s', async (_, mask) => {
    const pruned = await ModelSession.create(config, weights, { staticDrop: mask });
    try {
      // The pruned graph has no past inputs and no K/V outputs for dropped layers.
      const maskedCache = new JsKvCache(config, 1, 40, mask.attnKeep);
      const prunedCache = new JsKvCache(config, 1, 40, mask.attnKeep);
      let tokens = [PROMPT];
      let maskedVsPruned = 0;
      for (let step = 0; step < 10; step++) {
        const a = await runAndCache(await masked, maskedCache, tokens, mask);
        const b = await runAndCache(pruned, prunedCache, tokens, mask);
        a.forEach((logits, i) => {
          maskedVsPruned = Math.max(maskedVsPruned, maxAbsDiff(logits, b[i]!));
        });
        tokens = [[(step * 37 + 11) % config.vocabSize]];
      }
      expect(maskedVsPruned).toBeLessThanOrEqual(1e-6);

      const prunedVsReference = await compareDecode(pruned, config, weights, {
        prompt: PROMPT,
        steps: 10,
        mask,
      });
      expect(prunedVsReference.maxLogitDiff).toBeLessThanOrEqual(1e-4);
    } finally {
      await pruned.release();
    }
  });
});
