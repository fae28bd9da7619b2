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

interface StepTimes {
  wallMs: number[];
  /** Process CPU time: with one intra-op thread the run executes on this thread, so this is robust
   * to other processes competing for the cores, where wall time is not. */
  cpuMs: number[];
}

/** Times of each decode step after an 8-token prefill. */
async function decodeStepTimes(session: ModelSession, mask: SublayerMask, steps: number): Promise<StepTimes> {
  const cache = new JsKvCache(config, 1, 128, mask.attnKeep);
  await runAndCache(session, cache, [[1, 2, 3, 4, 5, 6, 7, 8]], mask);
  const times: StepTimes = { wallMs: [], cpuMs: [] };
  for (let i = 0; i < steps; i++) {
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    const [logits] = await runAndCache(session, cache, [[(i * 7919) % config.vocabSize]], mask);
    times.wallMs.push(performance.now() - start);
    const cpu = process.cpuUsage(cpuStart);
    times.cpuMs.push((cpu.user + cpu.system) / 1000);
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
    const times = {
      full: { wallMs: [], cpuMs: [] } as StepTimes,
      pruned: { wallMs: [], cpuMs: [] } as StepTimes,
    };
    // Interleaved rounds, so load from other processes hits both alike; the first round is warmup.
    for (let round = 0; round < 4; round++) {
      const f = await decodeStepTimes(s, full, 15);
      const p = await decodeStepTimes(s, pruned, 15);
      if (round === 0) continue;
      for (const [into, from] of [
        [times.full, f],
        [times.pruned, p],
      ] as const) {
        into.wallMs.push(...from.wallMs);
        into.cpuMs.push(...from.cpuMs);
      }
    }
    const line = (what: keyof StepTimes) => {
      const [f, p] = [median(times.full[what]), median(times.pruned[what])];
      return `${what} full ${f.toFixed(2)}, attention {1,3,4} dropped ${p.toFixed(2)}, pruned/full ${(p / f).toFixed(2)}×`;
    };
    console.log(
      `decode ms/step, medians of ${times.full.wallMs.length} steps\n  ${line('wallMs')}\n  ${line('cpuMs')}`,
    );
    expect(times.pruned.cpuMs).toHaveLength(45);
  });
});
