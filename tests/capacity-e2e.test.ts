import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VariantInfo } from '../engine/client.ts';
import type { ForwardInput } from '../engine/graph/io.ts';
import { loadModel } from '../engine/model/load-model.ts';
import { runCapacity } from '../loadtests/src/capacity.ts';
import { fetchVariants } from '../loadtests/src/variants-client.ts';
import { type CancelCountingEngine, createGatedEngine, type GatedRunner } from './support/gated-runner.ts';
import { STORIES_260K } from './support/shared-assets.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/**
 * Capacity under a KV budget, end to end: stories260K and a variant without 4 of its 5 attention
 * layers share one --kv-cache-bytes budget of exactly two full-model worst cases. With
 * --kv-admission worst-case (and 1-token blocks, so no padding) the scheduler admits a sequence only
 * when prompt + max_tokens fits, so under a closed-loop load of more users
 * than either can hold, the peak number of running sequences each one reaches is fixed by the
 * arithmetic floor(budget / (worst × KV bytes per token)): 2 for the full model, 10 for the variant
 * whose KV cache is a fifth the size (and 3, not 3.33, for one without 2 layers). The planner
 * (runCapacity) samples that peak from GET /v1/variants while it drives the load; the engine runs in
 * process behind a gate that keeps the peak in place until a poll has seen it.
 */

const PROMPT = 'Once upon a time, there was a little girl named Lily.';
const MAX_TOKENS = 64;
const USERS = 12;
const REQUESTS = 48;
const VARIANT = 'attn-4';
const DROPPED = { dropAttention: [1, 2, 3, 4], dropMlp: [] }; // the four cheapest attention layers of stories260K by cosine
/** Two layers dropped: 768 B/token, 1280/768 is not whole, so the floor decides (3, not 3.33). */
const VARIANT_2 = 'attn-2';
const DROPPED_2 = { dropAttention: [2, 3], dropMlp: [] };

let server: TestServer;
let dir: string;
let promptTokens: number;
let budgetBytes: number;
/** Variants whose peak (all KV room in use, more waiting) a /v1/variants answer has shown. */
const reported = new Set<string>();

beforeAll(async () => {
  // The server's own token count of the prompt (BOS included) sizes the budget: one throwaway server.
  const probe = await startTestServer({ model: 'stories260K' });
  try {
    const completion = await probe.client.completions.create({
      model: probe.modelName,
      prompt: PROMPT,
      max_tokens: 1,
    });
    promptTokens = completion.usage!.prompt_tokens;
  } finally {
    await probe.close();
  }
  const fullBytesPerToken = 1280; // 5 layers × 4 KV heads × head dim 8 × (K + V) × 4 bytes
  budgetBytes = 2 * (promptTokens + MAX_TOKENS) * fullBytesPerToken;
  // The peak is read by polling /v1/variants. So that a poll cannot miss it, each variant's decode
  // steps wait at a gate, the first time it runs its full complement of sequences with more
  // waiting, until a /v1/variants answer has shown that state; every model run still happens.
  const isPeak = (v: VariantInfo): boolean =>
    v.requestsRunning === Math.floor(budgetBytes / ((promptTokens + MAX_TOKENS) * v.kvBytesPerToken)) &&
    v.requestsWaiting > 0;
  let engine: CancelCountingEngine | undefined;
  let gate: GatedRunner | undefined;
  const isHeld = (input: ForwardInput): boolean => {
    if (input.seqLen !== 1 || !engine) return false; // prefills and scores pass
    const dropped = input.mask.attnKeep.flatMap((keep, layer) => (keep ? [] : [layer])).join(',');
    const variant = engine.core
      .variants()
      .find((v) => [...v.spec.dropAttention].sort((a, b) => a - b).join(',') === dropped);
    return variant !== undefined && !reported.has(variant.id) && isPeak(variant);
  };
  server = await startTestServer({
    createEngine: async () => {
      ({ engine, gate } = await createGatedEngine(
        {
          model: await loadModel({ model: STORIES_260K }),
          servedModelName: 'stories260K',
          variants: [
            { name: VARIANT, spec: DROPPED },
            { name: VARIANT_2, spec: DROPPED_2 },
          ],
          kvCacheBytes: budgetBytes,
          kvAdmission: 'worst-case',
          kvBlockTokens: 1,
          maxQueue: 64,
        },
        isHeld,
      ));
      engine.onVariants = (infos) => {
        for (const v of infos) if (isPeak(v)) reported.add(v.id);
        gate?.recheck();
      };
      return engine;
    },
  });
  dir = await mkdtemp(join(tmpdir(), 'dropserve-capacity-e2e-'));
}, 60_000);

afterAll(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('capacity under a KV budget (stories260K, real server)', () => {
  it('the attention-dropped variant runs floor(budget / (worst × bytes/token)) sequences: 5× the full model', async () => {
    const full = server.modelName;
    const pruned = `${full}:${VARIANT}`;
    const variants = await fetchVariants(server.url);
    const fullInfo = variants!.find((v) => v.id === full)!;
    const prunedInfo = variants!.find((v) => v.id === pruned)!;
    expect(fullInfo.kvBytesPerToken).toBe(1280);
    expect(prunedInfo.kvBytesPerToken).toBe(256);
    expect(prunedInfo.dropAttention).toEqual([1, 2, 3, 4]);
    expect(fullInfo.kvBudgetBytes).toBe(budgetBytes);

    // Every request is the same prompt, so every worst case is the same number of tokens.
    const dataset = join(dir, 'prompt.jsonl');
    await writeFile(dataset, `${JSON.stringify({ prompt: PROMPT })}\n`);
    const report = await runCapacity({
      baseUrl: server.url,
      models: [full, pruned, `${full}:${VARIANT_2}`],
      // The SLO is not what is measured here; it only has to hold so the single level counts.
      slo: { ttftMs: 60_000 },
      levels: [USERS],
      requestsPerLevel: REQUESTS,
      warmup: 0,
      dataset: { kind: 'file', path: dataset, outputLen: MAX_TOKENS },
      ignoreEos: true,
      saturationGain: -1,
      pollIntervalMs: 10,
    });
    expect(report.variantsAvailable).toBe(true);
    expect([...reported].sort()).toEqual([full, pruned, `${full}:${VARIANT_2}`].sort());

    const worst = promptTokens + MAX_TOKENS;
    const expectedRunning = (bytesPerToken: number): number =>
      Math.floor(budgetBytes / (worst * bytesPerToken));
    const rows = report.variants.map((v) => {
      const level = v.levels[0]!;
      const s = level.summary;
      expect(s.failed, `${v.model}: ${JSON.stringify(s.errorsByKind)}`).toBe(0);
      expect(s.completed).toBe(REQUESTS);
      expect(s.totalOutputTokens).toBe(REQUESTS * MAX_TOKENS);
      expect(s.totalInputTokens).toBe(REQUESTS * promptTokens);
      expect(s.maxConcurrency).toBe(USERS); // the client kept 12 requests in flight
      expect(v.kvBudgetBytes).toBe(budgetBytes);
      expect(v.kvBudgetTokens).toBe(Math.floor(budgetBytes / v.kvBytesPerToken!));
      // More users than KV room: some waited. Usage counts the tokens live sequences hold, which
      // never reach what their worst cases reserved (all of the budget for 2 × 1280 and 10 × 256,
      // 90% for 3 × 768).
      const expected = expectedRunning(v.kvBytesPerToken!);
      expect(level.maxWaiting).toBeGreaterThan(0);
      expect(level.maxKvCacheUsagePerc).toBeGreaterThan(0);
      expect(level.maxKvCacheUsagePerc).toBeLessThanOrEqual(
        (expected * worst * v.kvBytesPerToken!) / budgetBytes,
      );
      expect(v.maxRunningObserved, `${v.model} peak running`).toBe(expected);
      return {
        model: v.model,
        kvBytesPerToken: v.kvBytesPerToken!,
        expected,
        peak: v.maxRunningObserved!,
        reqPerS: s.requestThroughput,
      };
    });

    const [fullRow, prunedRow, halfRow] = rows;
    expect(fullRow!.expected).toBe(2);
    expect(prunedRow!.expected).toBe(10);
    expect(halfRow).toMatchObject({ kvBytesPerToken: 768, expected: 3 });
    const ratio = prunedRow!.peak / fullRow!.peak;
    expect(ratio).toBe(prunedRow!.expected / fullRow!.expected);
    expect(ratio).toBe(fullRow!.kvBytesPerToken / prunedRow!.kvBytesPerToken);
    console.log(
      [
        `KV budget ${budgetBytes} B = 2 × (${promptTokens} prompt + ${MAX_TOKENS} max_tokens) × 1280 B; ${USERS} users`,
        'model                    KV B/token  floor(budget/(worst×B))  peak running  req/s',
        ...rows.map(
          (r) =>
            `${r.model.padEnd(24)} ${String(r.kvBytesPerToken).padStart(10)}  ${String(r.expected).padStart(23)}  ${String(r.peak).padStart(12)}  ${r.reqPerS.toFixed(1).padStart(5)}`,
        ),
        `peak running ratio ${prunedRow!.model} / ${fullRow!.model} = ${ratio}; ${halfRow!.model} / ${fullRow!.model} = ${halfRow!.peak / fullRow!.peak}`,
      ].join('\n'),
    );
  });
});
