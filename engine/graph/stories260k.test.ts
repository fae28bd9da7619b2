import { afterAll, describe, expect, it } from 'vitest';
import { STORIES_260K_DIR } from '../../tests/support/shared-assets.ts';
import { loadLlama2cCheckpoint } from '../model/llama2c-loader.ts';
import { dropMask, fullMask, ReferenceModel } from '../reference/forward.ts';
import { Llama2cTokenizer } from '../tokenizer/llama2c-tokenizer.ts';
import type { SublayerMask } from './io.ts';
import { ModelSession } from './model-session.ts';
import { argmax, JsKvCache, maxAbsDiff, runAndCache } from './testing/js-kv-cache.ts';

const DIR = STORIES_260K_DIR;
const PROMPT = [1, 403, 407, 261, 378]; // BOS + "Once upon a time" (llama2.c run.c, greedy)
const STEPS = 24;

const model = loadLlama2cCheckpoint(`${DIR}/stories260K.bin`);

/** Greedy decode of the graph and of the reference, each following its own picks. */
async function greedyBoth(session: ModelSession, mask: SublayerMask) {
  const { config, weights } = model;
  const reference = new ReferenceModel(config, weights);
  const cache = new JsKvCache(config, 1, 64, mask.attnKeep);
  let graphLogits = (await runAndCache(session, cache, [PROMPT], mask)).at(-1)!;
  let refLogits = reference.forward(PROMPT, mask).at(-1)!;
  let maxDiff = maxAbsDiff(graphLogits, refLogits);
  const graphIds: number[] = [];
  const refIds: number[] = [];
  for (let step = 0; step < STEPS; step++) {
    graphIds.push(argmax(graphLogits));
    refIds.push(argmax(refLogits));
    graphLogits = (await runAndCache(session, cache, [[graphIds.at(-1)!]], mask))[0]!;
    refLogits = reference.forward([refIds.at(-1)!], mask)[0]!;
    maxDiff = Math.max(maxDiff, maxAbsDiff(graphLogits, refLogits));
  }
  return { maxDiff, graphIds, refIds };
}

describe('stories260K (trained llama2.c checkpoint: head_dim 8, GQA 2, interleaved RoPE, tied)', () => {
  const session = ModelSession.create(model.config, model.weights);
  afterAll(async () => (await session).release());

  it('graph and reference agree on logits (≤1e-4) and greedy ids; the text is the known one', async () => {
    const { maxDiff, graphIds, refIds } = await greedyBoth(await session, fullMask(model.config.numLayers));
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
    expect(graphIds).toEqual(refIds);
    const tokenizer = Llama2cTokenizer.fromFile(`${DIR}/tok512.bin`, { vocabSize: model.config.vocabSize });
    // llama2.c run.c greedy: "Once upon a time, there was a little girl named Lily. She loved to play ..."
    expect(tokenizer.decode(graphIds)).toMatch(/^, there was a little girl named Lily\. She/);
  });

  it('agrees with attention {1,3} and MLP 4 dropped as well', async () => {
    const { maxDiff, graphIds, refIds } = await greedyBoth(
      await session,
      dropMask(model.config.numLayers, [1, 3], [4]),
    );
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
    expect(graphIds).toEqual(refIds);
  });
});
