import { afterAll, describe, expect, it } from 'vitest';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import { dropMask, fullMask } from '../reference/forward.ts';
import type { SublayerMask } from './io.ts';
import { ModelSession } from './model-session.ts';
import { JsKvCache, runAndCache } from './testing/js-kv-cache.ts';

// stories15M's shape (llama2.c): the size the onnxruntime notes measured decode on.
const config = syntheticConfig({
  dim: 288,
  hiddenDim: 768,
  numLayers: 6,
  numHeads: 6,
  numKvHeads: 6,
  vocabSize: 32000,
  maxSeqLen: 256,
});

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** Milliseconds of each decode step after an 8-token prefill, `steps` steps. */
async function decodeStepMs(session: ModelSession, mask: SublayerMask, steps: number): Promise<number[]> {
  const cache = new JsKvCache(config, 1, 128, mask.attnKeep);
  await runAndCache(session, cache, [[1, 2, 3, 4, 5, 6, 7, 8]], mask);
  const times: number[] = [];
  for (let i = 0; i < steps; i++) {
    const start = performance.now();
    const [logits] = await runAndCache(session, cache, [[(i * 7919) % config.vocabSize]], mask);
    times.push(performance.now() - start);
    expect(Number.isFinite(logits![0]!)).toBe(true);
  }
  return times;
}

describe('decode timing (printed, not asserted): 6 layers, dim 288, vocab 32000, B=1, 1 thread', () => {
  const session = ModelSession.create(config, syntheticWeights(config, 1));
  afterAll(async () => (await session).release());

  it('full vs attention {1,3,4} dropped, one masked session', async () => {
    const s = await session;
    const full = fullMask(6);
    const pruned = dropMask(6, [1, 3, 4]);
    const times = { full: [] as number[], pruned: [] as number[] };
    // Interleaved rounds, so load from other processes hits both alike; the first round is warmup.
    for (let round = 0; round < 4; round++) {
      const f = await decodeStepMs(s, full, 15);
      const p = await decodeStepMs(s, pruned, 15);
      if (round === 0) continue;
      times.full.push(...f);
      times.pruned.push(...p);
    }
    const fullMs = median(times.full);
    const prunedMs = median(times.pruned);
    console.log(
      `decode ms/step (median of ${times.full.length}): full ${fullMs.toFixed(2)}, ` +
        `attention {1,3,4} dropped ${prunedMs.toFixed(2)}, pruned/full ${(prunedMs / fullMs).toFixed(2)}×`,
    );
    expect(times.pruned).toHaveLength(45);
  });
});
