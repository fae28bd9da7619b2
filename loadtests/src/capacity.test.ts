import { afterEach, describe, expect, it } from 'vitest';
import { geometricLevels, runCapacity, type VariantCapacity, verdictLines } from './capacity.ts';
import { renderCapacityChart } from './capacity-chart.ts';
import { type LoadtestOptions, type LoadtestReport, resolveConfig } from './loadtest.ts';
import { type RequestRecord, summarize } from './metrics.ts';
import { meetsSlo } from './slo.ts';
import { type FakeUpstream, startFakeUpstream } from './testing/fake-upstream.ts';

let upstream: FakeUpstream | undefined;
afterEach(async () => {
  await upstream?.close();
  upstream = undefined;
});

const MiB = 1024 * 1024;

describe('geometricLevels', () => {
  it('multiplies up to the maximum', () => {
    expect(geometricLevels(1, 64, 2)).toEqual([1, 2, 4, 8, 16, 32, 64]);
    expect(geometricLevels(2, 50, 3)).toEqual([2, 6, 18]);
    expect(geometricLevels(1, 5, 1.5)).toEqual([1, 2, 3, 5]);
    expect(() => geometricLevels(0, 4, 2)).toThrow(RangeError);
    expect(() => geometricLevels(1, 4, 1)).toThrow(RangeError);
  });
});

describe('verdictLines', () => {
  const variant = (
    model: string,
    maxConcurrency: number,
    stopReason: VariantCapacity['stopReason'],
  ): VariantCapacity => ({
    model,
    levels: [],
    maxConcurrency,
    goodputAtMax: maxConcurrency * 1.5,
    outputThroughputAtMax: 0,
    stopReason,
    stoppedAt: null,
    kvBytesPerToken: null,
    kvBudgetBytes: null,
    kvBudgetTokens: null,
    maxRunningObserved: null,
    agreement: null,
    agreementSamples: 0,
    variant: null,
  });
  const slo = { ttftMs: 500, tpotMs: 50 };

  it('states the ratio against the baseline, with caveats where the sweep did not find the limit', () => {
    expect(
      verdictLines([variant('b', 5, 'slo_broken'), variant('v', 8, 'slo_broken')], 'b', slo, 99, [1]),
    ).toEqual([
      'v holds 1.6× the users of b at p99 TTFT ≤ 500 ms, p99 TPOT ≤ 50 ms (8 vs 5 concurrent users, goodput 12.00 vs 7.50 req/s)',
    ]);
    expect(
      verdictLines([variant('b', 4, 'saturated'), variant('v', 64, 'max_level')], 'b', slo, 90, [1]),
    ).toEqual([
      'v holds 16.0× the users of b at p90 TTFT ≤ 500 ms, p90 TPOT ≤ 50 ms (≥64 vs 4 concurrent users, goodput 96.00 vs 6.00 req/s; b saturated (throughput stopped growing) before the SLO broke)',
    ]);
    expect(
      verdictLines([variant('b', 0, 'slo_broken'), variant('v', 2, 'slo_broken')], 'b', slo, 99, [1])[0],
    ).toBe('v holds 2 users at p99 TTFT ≤ 500 ms, p99 TPOT ≤ 50 ms; b holds none (fails at 1)');
    expect(verdictLines([variant('b', 0, 'errors'), variant('v', 0, 'errors')], 'b', slo, 99, [2])[0]).toBe(
      'neither v nor b holds p99 TTFT ≤ 500 ms, p99 TPOT ≤ 50 ms at 2 concurrent user(s)',
    );
    expect(verdictLines([variant('b', 4, 'slo_broken')], 'b', slo, 99, [1])).toEqual([]);
  });
});

/**
 * A level measured by script instead of by the clock: every request of a level at concurrency c has
 * the TTFT and output tokens the script gives, so the planner's decisions are exact on any machine.
 */
function scriptedLevels(
  script: (model: string, concurrency: number) => { ttftMs: number; outputTokens: number; failed?: number },
): { measureLevel: (o: LoadtestOptions) => Promise<LoadtestReport>; measured: string[] } {
  const measured: string[] = [];
  const measureLevel = async (o: LoadtestOptions): Promise<LoadtestReport> => {
    const concurrency = o.concurrency!;
    const requests = o.requests!;
    measured.push(`${o.model}@${concurrency}`);
    const { ttftMs, outputTokens, failed = 0 } = script(o.model, concurrency);
    const slo = o.slo ?? {};
    // Closed loop: c requests at a time, each lasting e2eMs, so the level takes requests/c rounds.
    const e2eMs = ttftMs + 5 * (outputTokens - 1);
    const records: RequestRecord[] = Array.from({ length: requests }, (_, index) => {
      const isOk = index >= failed;
      const record: RequestRecord = {
        index,
        isOk,
        status: isOk ? 200 : 429,
        startMs: Math.floor(index / concurrency) * e2eMs,
        ttftMs: isOk ? ttftMs : null,
        tpotMs: isOk ? 5 : null,
        e2eMs,
        itlMs: isOk ? Array.from({ length: outputTokens - 1 }, () => 5) : [],
        promptTokens: 8,
        outputTokens: isOk ? outputTokens : 0,
        outputTokensSource: 'usage',
        maxTokens: outputTokens,
        finishReason: isOk ? 'length' : null,
        meetsSlo: isOk ? meetsSlo(slo, { ttftMs, tpotMs: 5, e2eMs }) : null,
      };
      if (!isOk) record.errorKind = 'http_429';
      return record;
    });
    const durationMs = Math.ceil(requests / concurrency) * e2eMs;
    return {
      config: resolveConfig(o, 'scripted'),
      commit: 'test',
      startedAt: new Date(0).toISOString(),
      warmup: { requests: 0, failed: 0 },
      summary: summarize(records, durationMs, slo, concurrency),
      requests: records,
    };
  };
  return { measureLevel, measured };
}

const variantsBody = (drop: number[], id: string, bytes: number) => ({
  id,
  base: 'm',
  drop_attention: drop,
  drop_mlp: [],
  kv_bytes_per_token: bytes,
  kv_cache_usage_perc: 0,
  kv_cache_budget_bytes: 64 * MiB,
  requests_running: 0,
  requests_waiting: 0,
});

describe('runCapacity decisions (levels measured by script)', () => {
  it('stops each variant where the median TTFT SLO breaks and compares them with the baseline', async () => {
    // TTFT = 40 ms + k × concurrency: k = 16 ms for the full model, 8 ms for the pruned one. With an
    // SLO of 150 ms the full model holds 4 users (104 ms) and breaks at 8 (168 ms); the pruned one
    // holds 8 (104 ms) and breaks at 16.
    const msPerUser: Record<string, number> = { m: 16, 'm:attn-2': 8 };
    const { measureLevel, measured } = scriptedLevels((model, c) => ({
      ttftMs: 40 + msPerUser[model]! * c,
      outputTokens: 3,
    }));
    upstream = await startFakeUpstream({
      plan: () => ({ kind: 'error', status: 500, message: 'levels are scripted; nothing is sent here' }),
      variants: () => [variantsBody([], 'm', 4096), variantsBody([1, 3], 'm:attn-2', 2048)],
    });
    const seen: string[] = [];
    const report = await runCapacity({
      baseUrl: upstream.baseUrl,
      models: ['m', 'm:attn-2'],
      slo: { ttftMs: 150 },
      sloPercentile: 50,
      levels: [2, 4, 8, 16, 32],
      measureLevel,
      onLevel: (model, level) =>
        seen.push(`${model}@${level.concurrency}:${level.holdsSlo ? 'ok' : 'broken'}`),
    });
    expect(seen).toEqual([
      'm@2:ok',
      'm@4:ok',
      'm@8:broken',
      'm:attn-2@2:ok',
      'm:attn-2@4:ok',
      'm:attn-2@8:ok',
      'm:attn-2@16:broken',
    ]);
    expect(measured).toEqual(['m@2', 'm@4', 'm@8', 'm:attn-2@2', 'm:attn-2@4', 'm:attn-2@8', 'm:attn-2@16']);
    expect(upstream.log).toHaveLength(0);
    const [full, pruned] = report.variants;
    expect(full).toMatchObject({ model: 'm', maxConcurrency: 4, stopReason: 'slo_broken', stoppedAt: 8 });
    expect(pruned).toMatchObject({
      model: 'm:attn-2',
      maxConcurrency: 8,
      stopReason: 'slo_broken',
      stoppedAt: 16,
    });
    expect(full!.levels.map((l) => l.observed.ttftMs)).toEqual([72, 104, 168]);
    // Goodput at the held level counts the requests that individually met the SLO: all of them here.
    const heldSummary = full!.levels[1]!.summary;
    expect(heldSummary.goodRequests).toBe(16);
    expect(full!.goodputAtMax).toBe(heldSummary.goodput);
    expect(full!.goodputAtMax).toBeCloseTo(16 / heldSummary.durationS, 9);
    // KV figures come from /v1/variants.
    expect(full!.kvBytesPerToken).toBe(4096);
    expect(pruned!.kvBytesPerToken).toBe(2048);
    expect(pruned!.kvBudgetTokens).toBe((64 * MiB) / 2048);
    expect(report.variantsAvailable).toBe(true);
    expect(report.verdicts).toEqual([
      `m:attn-2 holds 2.0× the users of m at p50 TTFT ≤ 150 ms (8 vs 4 concurrent users, goodput ` +
        `${pruned!.goodputAtMax.toFixed(2)} vs ${full!.goodputAtMax.toFixed(2)} req/s)`,
    ]);

    const svg = renderCapacityChart(report);
    expect(svg.match(/<path class="series" data-series="m"/g)).toHaveLength(2);
    expect(svg.match(/<path class="series" data-series="m:attn-2"/g)).toHaveLength(2);
    expect(svg).toContain('SLO 150 ms');
  });

  it('stops when throughput stops growing (a saturated server) while the SLO still holds', async () => {
    // One request at a time: each user more only queues, so the level's throughput is flat from 2 on.
    const { measureLevel, measured } = scriptedLevels((_, c) => ({ ttftMs: 50 * c, outputTokens: 3 }));
    const report = await runCapacity({
      baseUrl: 'http://127.0.0.1:9', // no server: without /v1/variants capacity still works
      models: ['m'],
      slo: { ttftMs: 10_000 },
      levels: [1, 2, 4, 8],
      requestsPerLevel: 8,
      measureLevel,
    });
    const [only] = report.variants;
    expect(measured).toEqual(['m@1', 'm@2']);
    expect(only).toMatchObject({ stopReason: 'saturated', stoppedAt: 2, maxConcurrency: 2 });
    expect(report.variantsAvailable).toBe(false);
    expect(only!.kvBytesPerToken).toBeNull();
    expect(only!.maxRunningObserved).toBeNull();
    expect(report.verdicts).toEqual([]);
  });

  it('stops at the first level with errors (the server sheds load with 429)', async () => {
    const { measureLevel } = scriptedLevels((_, c) => ({
      ttftMs: 20,
      outputTokens: 2,
      failed: c > 3 ? 3 : 0,
    }));
    const report = await runCapacity({
      baseUrl: 'http://127.0.0.1:9',
      models: ['m'],
      slo: { ttftMs: 5000 },
      levels: [1, 2, 4, 8],
      requestsPerLevel: 12,
      saturationGain: -1, // never call it saturated: this test is about errors
      measureLevel,
    });
    const [only] = report.variants;
    expect(only).toMatchObject({ stopReason: 'errors', stoppedAt: 4, maxConcurrency: 2 });
    expect(only!.levels[2]!.summary.errorsByKind.http_429).toBe(3);
    expect(only!.levels[2]!.errorRate).toBe(3 / 12);
    expect(only!.levels[2]!.holdsSlo).toBe(false);
  });
});

describe('runCapacity against a real HTTP server (the measuring path)', () => {
  it('measures every level with real requests and decides from what it measured', async () => {
    // Latency grows with requests in flight; how far depends on this machine's speed and load, so the
    // assertions are the rules the planner applies to whatever it measured.
    upstream = await startFakeUpstream({
      plan: ({ inFlight }) => ({ kind: 'stream', ttftMs: 10 + 10 * inFlight, itlMs: 2, chunks: 3 }),
      variants: (inFlight) => [{ ...variantsBody([], 'm', 4096), requests_running: inFlight.get('m') ?? 0 }],
    });
    const levels = [1, 2, 4, 8];
    const slo = { ttftMs: 45 };
    const report = await runCapacity({
      baseUrl: upstream.baseUrl,
      models: ['m'],
      slo,
      sloPercentile: 50,
      saturationGain: -1,
      levels,
      requestsPerLevel: 8,
      warmup: 1,
      pollIntervalMs: 20,
    });
    const [only] = report.variants;
    const tried = only!.levels;
    expect(tried.map((l) => l.concurrency)).toEqual(levels.slice(0, tried.length));
    // Every measured request reached the server: warm-up + 8 per level tried.
    expect(upstream.log).toHaveLength(1 + 8 * tried.length);
    for (const level of tried) {
      expect(level.summary.completed).toBe(8);
      expect(level.holdsSlo).toBe(level.observed.ttftMs! <= slo.ttftMs);
      if (level.maxRunning !== null) expect(level.maxRunning).toBeLessThanOrEqual(level.concurrency);
    }
    const firstBroken = tried.findIndex((l) => !l.holdsSlo);
    if (firstBroken >= 0) {
      expect(firstBroken).toBe(tried.length - 1);
      expect(only).toMatchObject({ stopReason: 'slo_broken', stoppedAt: tried[firstBroken]!.concurrency });
    } else {
      expect(only).toMatchObject({ stopReason: 'max_level', stoppedAt: null });
    }
    const held = firstBroken < 0 ? tried : tried.slice(0, firstBroken);
    expect(only!.maxConcurrency).toBe(held.at(-1)?.concurrency ?? 0);
    expect(only!.kvBytesPerToken).toBe(4096);
  });

  it('rejects options it cannot plan with', async () => {
    const base = { baseUrl: 'http://127.0.0.1:9', models: ['m'], slo: { ttftMs: 1 }, levels: [1, 2] };
    await expect(runCapacity({ ...base, slo: {} })).rejects.toThrow(/needs an SLO/);
    await expect(runCapacity({ ...base, levels: [4, 2] })).rejects.toThrow(/strictly increasing/);
    await expect(runCapacity({ ...base, sloPercentile: 97 })).rejects.toThrow(/50, 90, 95 or 99/);
    await expect(runCapacity({ ...base, baseline: 'x' })).rejects.toThrow(/not one of the models/);
  });
});
