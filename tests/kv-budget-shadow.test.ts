import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_SAMPLING,
  type GenerateRequest,
  type ScoreRequest,
  type ScoreResult,
} from '../engine/client.ts';
import { createEngine, type InProcessEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { generatedTokenIds } from '../engine/output/token-ids.ts';
import { DEFAULT_KV_BLOCK_TOKENS } from '../kv-cache/kv-layout.ts';
import type { VariantView } from '../server/admin/variants/route.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { type CancelCountingEngine, createGatedEngine } from './support/gated-runner.ts';
import { KvMemorySampler } from './support/kv-memory-sampler.ts';
import { STORIES_260K } from './support/shared-assets.ts';
import { e2eServerOptions, eventually, scrapeMetrics, sumOf } from './support/test-server.ts';

/**
 * Background scores (shadow scoring) are jobs of the same scheduler as interactive generations: their
 * KV comes out of the same --kv-cache-bytes budget, and they are the first to be preempted when
 * interactive work needs the room. Under a budget of a few blocks, with interactive requests and
 * long background scores in flight together, the allocated KV never exceeds the budget at any model
 * run, and every generation and every score completes with the result it has with room to spare.
 */

const FULL_KV_BYTES_PER_TOKEN = 1280; // 5 layers × 4 KV heads × head dim 8 × (K + V) × 4 bytes
/** 24 blocks of the full model: one score of ≈ 315 tokens fits (20 blocks), a score and a few generations do not. */
const BUDGET_BYTES = 24 * DEFAULT_KV_BLOCK_TOKENS * FULL_KV_BYTES_PER_TOKEN;
const GREEDY = { ...DEFAULT_SAMPLING, temperature: 0 };
const PRUNED = { name: 'attn-2', spec: { dropAttention: [2, 3], dropMlp: [] } };

let model: LoadedModel;
let reference: InProcessEngine;

beforeAll(async () => {
  model = await loadModel({ model: STORIES_260K });
  reference = await createEngine({
    model,
    servedModelName: 'm',
    variants: [PRUNED],
    kvCacheBytes: 64 * 1024 * 1024,
  });
}, 60_000);

afterAll(async () => {
  await reference?.close();
});

function prompt(i: number): number[] {
  const names = ['Lily', 'Tom', 'Sue', 'Ben', 'Mia', 'Max'];
  return model.tokenizer.encode(
    `${names[i % names.length]} went to the park with ${names[(i + 1) % names.length]}.`,
    {
      addBos: true,
    },
  );
}

function generation(i: number): GenerateRequest {
  return {
    requestId: `g${i}`,
    variant: i % 2 === 0 ? 'm' : 'm:attn-2',
    promptTokenIds: prompt(i),
    maxTokens: 24 + ((i * 37) % 97),
    ignoreEos: true,
    sampling: GREEDY,
  };
}

describe('background scores inside the KV budget (stories260K)', () => {
  it('interactive generations and long background scores together: budget held at every step, all results exact', async () => {
    // Score texts: prompt + 300 greedy tokens, 20 blocks of KV each when scored on the full model.
    const scoreTexts = await Promise.all(
      [0, 1, 2, 3, 4, 5].map(async (i) => {
        const ids = await generatedTokenIds(
          reference.generate({ ...generation(i), requestId: `t${i}`, variant: 'm', maxTokens: 300 }),
        );
        return [...prompt(i), ...ids];
      }),
    );
    const scores: ScoreRequest[] = scoreTexts.map((tokenIds, i) => ({
      requestId: `s${i}`,
      variant: 'm',
      tokenIds,
      fromIndex: 8,
      priority: 'background',
    }));
    const generations = Array.from({ length: 12 }, (_, i) => generation(i));
    const expectedScores = await Promise.all(scores.map((s) => reference.score(s)));
    const expectedIds = await Promise.all(generations.map((g) => generatedTokenIds(reference.generate(g))));

    let released = false;
    const { engine, gate } = await createGatedEngine(
      { model, servedModelName: 'm', variants: [PRUNED], kvCacheBytes: BUDGET_BYTES },
      () => !released,
    );
    try {
      const sampler = new KvMemorySampler(engine.core);
      // Scores first, so they hold KV when the generations arrive and must make room for them.
      const scored = scores.map((s) => engine.score(s));
      const generated = generations.map((g) => generatedTokenIds(engine.generate(g)));
      released = true;
      gate.recheck();
      const [actualScores, actualIds] = await Promise.all([Promise.all(scored), Promise.all(generated)]);

      expect(actualIds).toEqual(expectedIds);
      for (const [i, result] of actualScores.entries())
        expectSameScore(result, expectedScores[i]!, `score ${i}`);
      expect(sampler.steps).toBeGreaterThan(0);
      expect(sampler.overBudget).toEqual([]);
      expect(sampler.usedAboveAllocated).toEqual([]);
      // Six 20-block scores could not all have held their KV at once: the budget was what bound.
      expect(6 * 20 * DEFAULT_KV_BLOCK_TOKENS * FULL_KV_BYTES_PER_TOKEN).toBeGreaterThan(BUDGET_BYTES);
      expect(engine.core.kvMemory().usedBytes).toBe(0);
    } finally {
      await engine.close();
    }
  });

  describe('--shadow-rate 1 on a real server under a small --kv-cache-bytes', () => {
    let server: RunningServer;
    let engine: CancelCountingEngine | undefined;
    let sampler: KvMemorySampler | undefined;
    beforeAll(async () => {
      server = await startServer(
        e2eServerOptions('stories260K', {
          shadowRate: 1,
          // Room for every sample: none is dropped for too many scores in flight.
          shadowMaxInFlight: 64,
          createEngine: async () => {
            ({ engine } = await createGatedEngine(
              { model, servedModelName: 'stories260K', variants: [PRUNED], kvCacheBytes: BUDGET_BYTES },
              () => false,
            ));
            sampler = new KvMemorySampler(engine.core);
            return engine;
          },
        }),
      );
    }, 60_000);
    afterAll(() => server?.close(0));

    it('pruned traffic is scored by the full model while the budget holds at every step', async () => {
      const url = server.httpUrl;
      const variant = 'stories260K:attn-2';
      const fidelitySamples = async (): Promise<number> => {
        const views = (await (await fetch(`${url}/v1/variants`)).json()) as VariantView[];
        return views.find((v) => v.id === variant)?.fidelity?.samples ?? 0;
      };
      const complete = (i: number): Promise<Response> =>
        fetch(`${url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            model: variant,
            prompt: `Once upon a time ${i}`,
            max_tokens: 32 + ((i * 53) % 160),
            temperature: 0,
            ignore_eos: true,
          }),
        });

      // One request alone is always scored (nothing waits when it finishes)…
      expect((await complete(0)).status).toBe(200);
      await eventually(async () => (await fidelitySamples()) === 1);
      // …then 16 at once: each sample is scored or, if interactive work was waiting, dropped as busy.
      const responses = await Promise.all(Array.from({ length: 16 }, (_, i) => complete(i + 1)));
      expect(responses.map((r) => r.status)).toEqual(Array(16).fill(200));
      const labels = { variant };
      let metrics = await scrapeMetrics(url);
      await eventually(async () => {
        metrics = await scrapeMetrics(url);
        const settled =
          sumOf(metrics, 'dropserve:fidelity_top1_agreement_count', labels) +
          sumOf(metrics, 'dropserve:shadow_dropped_total', labels);
        return settled === sumOf(metrics, 'dropserve:shadow_requests_total', labels);
      });
      expect(sumOf(metrics, 'dropserve:shadow_requests_total', labels)).toBe(17);
      expect(sumOf(metrics, 'dropserve:shadow_dropped_total', { ...labels, reason: 'error' })).toBe(0);
      expect(await fidelitySamples()).toBe(sumOf(metrics, 'dropserve:fidelity_top1_agreement_count', labels));

      expect(sampler!.steps).toBeGreaterThan(0);
      expect(sampler!.overBudget).toEqual([]);
      expect(sampler!.usedAboveAllocated).toEqual([]);
      expect(engine!.core.kvMemory().budgetBytes).toBe(BUDGET_BYTES);
      const allocated = sumOf(metrics, 'dropserve:kv_cache_allocated_bytes');
      expect(allocated).toBeLessThanOrEqual(BUDGET_BYTES);
    });
  });
});

function expectSameScore(actual: ScoreResult, expected: ScoreResult, what: string): void {
  expect(actual.argmaxIds, what).toEqual(expected.argmaxIds);
  expect(actual.tokenLogprobs.length, what).toBe(expected.tokenLogprobs.length);
  const worst = Math.max(...actual.tokenLogprobs.map((lp, i) => Math.abs(lp - expected.tokenLogprobs[i]!)));
  // Recomputed after a preemption, a score runs the same positions in other chunks: float rounding only.
  expect(worst, what).toBeLessThan(1e-4);
}
