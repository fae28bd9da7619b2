import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type FinishEvent, type GenerateRequest } from '../engine/client.ts';
import { createEngine, type InProcessEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { blockAligned, DEFAULT_KV_BLOCK_TOKENS } from '../kv-cache/kv-layout.ts';
import { type CancelCountingEngine, createGatedEngine } from './support/gated-runner.ts';
import { KvMemorySampler, sequencesInEngine } from './support/kv-memory-sampler.ts';
import { STORIES_260K } from './support/shared-assets.ts';
import { eventually } from './support/test-server.ts';

/**
 * What KV on demand buys: real traffic asks for max_tokens 256 and stops after a few dozen tokens.
 * With a budget that holds N worst cases (prompt + 256 tokens), reserving the worst case runs at most
 * N sequences at once; admitting on the blocks actually used runs all 4N of these requests at once.
 * Memory in use never exceeds the budget, read after every model run, and both ways give the tokens
 * of an unconstrained engine.
 *
 * Each request stops after about 32 tokens at a stop token found by a greedy run first (the first
 * token first generated at the position nearest 32), so where it stops is fixed by the model, not by
 * timing. The engines run every model run behind a gate until all 4N requests are in the engine.
 */

const N = 4;
const REQUESTS = 4 * N;
const MAX_TOKENS = 256;
const FULL_KV_BYTES_PER_TOKEN = 1280; // 5 layers × 4 KV heads × head dim 8 × (K + V) × 4 bytes
const GREEDY = { ...DEFAULT_SAMPLING, temperature: 0 };

const NAMES = ['Lily', 'Tom', 'Sue', 'Ben', 'Mia', 'Max', 'Anna', 'Sam'];
const STARTS = ['went to the park', 'found a red ball'];
const TEXTS = Array.from(
  { length: REQUESTS },
  (_, i) => `${NAMES[i % NAMES.length]} ${STARTS[Math.floor(i / NAMES.length)]}.`,
);

interface Run {
  ids: number[];
  finish: FinishEvent;
}

async function run(engine: InProcessEngine, request: GenerateRequest): Promise<Run> {
  const ids: number[] = [];
  let finish: FinishEvent | undefined;
  for await (const event of engine.generate(request)) {
    if (event.type === 'token') ids.push(event.tokenId);
    else finish = event;
  }
  return { ids, finish: finish! };
}

/** The token the greedy output produces first at the position nearest 32 (within 16..56), if any. */
function stopTokenNear32(ids: number[]): number | undefined {
  let best: number | undefined;
  for (let i = 16; i <= 56 && i < ids.length; i++) {
    if (ids.slice(0, i).includes(ids[i]!)) continue;
    if (best === undefined || Math.abs(i - 32) < Math.abs(best - 32)) best = i;
  }
  return best === undefined ? undefined : ids[best];
}

let model: LoadedModel;
let reference: InProcessEngine;
let requests: GenerateRequest[];
let expected: Run[];
let budgetBytes: number;
let worstCaseBytes: number;

beforeAll(async () => {
  model = await loadModel({ model: STORIES_260K });
  reference = await createEngine({ model, servedModelName: 'm', kvCacheBytes: 64 * 1024 * 1024 });
  const prompts = TEXTS.map((text) => model.tokenizer.encode(text, { addBos: true }));
  const base = (i: number): GenerateRequest => ({
    requestId: `cap-${i}`,
    variant: 'm',
    promptTokenIds: prompts[i]!,
    maxTokens: MAX_TOKENS,
    sampling: GREEDY,
  });
  const free = await Promise.all(prompts.map((_, i) => run(reference, base(i))));
  requests = free.map((r, i) => {
    const stop = stopTokenNear32(r.ids);
    return stop === undefined ? base(i) : { ...base(i), stopTokenIds: [stop] };
  });
  expected = await Promise.all(requests.map((r) => run(reference, r)));
  // The worst case the old admission reserves per sequence, padded to whole blocks like any arena row.
  const worstTokens = blockAligned(
    Math.max(...prompts.map((p) => p.length)) + MAX_TOKENS,
    DEFAULT_KV_BLOCK_TOKENS,
  );
  worstCaseBytes = worstTokens * FULL_KV_BYTES_PER_TOKEN;
  // N worst cases plus 2% (room for a small admission watermark), far from N + 1.
  budgetBytes = Math.floor(N * worstCaseBytes * 1.02);
}, 60_000);

afterAll(async () => {
  await reference?.close();
});

/** Runs every request at once on a gated engine under the budget; every step's memory is sampled. */
async function runAll(
  kvAdmission: 'on-demand' | 'worst-case',
): Promise<{ runs: Run[]; sampler: KvMemorySampler; preemptions: number }> {
  let released = false;
  const { engine, gate } = await createGatedEngine(
    { model, servedModelName: 'm', kvCacheBytes: budgetBytes, kvAdmission },
    () => !released,
  );
  try {
    const sampler = new KvMemorySampler(engine.core);
    const pending = requests.map((r) => run(engine, r));
    await eventually(() => sequencesInEngine(engine.core) === REQUESTS);
    released = true;
    gate.recheck();
    const runs = await Promise.all(pending);
    sampler.sample();
    return { runs, sampler, preemptions: preemptionsOf(engine) };
  } finally {
    await engine.close();
  }
}

function preemptionsOf(engine: CancelCountingEngine): number {
  return engine
    .variants()
    .reduce((sum, v) => sum + ((v as { numPreemptions?: number }).numPreemptions ?? 0), 0);
}

describe('capacity: KV on demand against worst-case reservation (stories260K, one budget)', () => {
  it('requests that stop after ~32 of max_tokens 256: on demand runs all 4N at once, worst case at most N', async () => {
    expect(N * worstCaseBytes).toBeLessThanOrEqual(budgetBytes);
    expect((N + 1) * worstCaseBytes).toBeGreaterThan(budgetBytes);
    const stopped = expected.filter((r) => r.finish.reason === 'stop').map((r) => r.ids.length);
    expect(stopped.length).toBe(REQUESTS);
    expect(Math.max(...stopped)).toBeLessThanOrEqual(56);

    const onDemand = await runAll('on-demand');
    const worstCase = await runAll('worst-case');

    for (const [label, result] of [
      ['on-demand', onDemand],
      ['worst-case', worstCase],
    ] as const) {
      expect(
        result.runs.map((r) => r.ids),
        label,
      ).toEqual(expected.map((r) => r.ids));
      expect(
        result.runs.map((r) => r.finish.reason),
        label,
      ).toEqual(expected.map((r) => r.finish.reason));
      // Sampled after every model run: the allocated KV never exceeded the budget.
      expect(result.sampler.steps, label).toBeGreaterThan(REQUESTS);
      expect(result.sampler.overBudget, label).toEqual([]);
      expect(result.sampler.usedAboveAllocated, label).toEqual([]);
      expect(result.sampler.maxAllocatedBytes, label).toBeLessThanOrEqual(budgetBytes);
    }
    expect(onDemand.sampler.maxRunning).toBeGreaterThanOrEqual(4 * N);
    expect(worstCase.sampler.maxRunning).toBeGreaterThanOrEqual(1);
    expect(worstCase.sampler.maxRunning).toBeLessThanOrEqual(N);
    expect(worstCase.preemptions).toBe(0);
    console.log(
      [
        `KV budget ${budgetBytes} B ≈ ${N} × ${worstCaseBytes} B worst case (prompt + ${MAX_TOKENS} tokens); ${REQUESTS} requests stopping after ${Math.min(...stopped)}..${Math.max(...stopped)} tokens`,
        'admission   max running at once  max KV allocated  preemptions',
        ...(
          [
            ['worst-case', worstCase],
            ['on-demand', onDemand],
          ] as const
        ).map(
          ([label, r]) =>
            `${label.padEnd(10)}  ${String(r.sampler.maxRunning).padStart(19)}  ${String(r.sampler.maxAllocatedBytes).padStart(16)}  ${String(r.preemptions).padStart(11)}`,
        ),
      ].join('\n'),
    );
  });
});
