import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LoadtestReport, runLoadtest } from '../loadtests/src/loadtest.ts';
import type { RequestRecord } from '../loadtests/src/metrics.ts';
import type { DistributionStats } from '../loadtests/src/stats.ts';
import { scrapeMetrics, startTestServer, sumOf, type TestServer } from './support/test-server.ts';

/**
 * `dropserve loadtest` against a real dropserve on 127.0.0.1: the stories260K checkpoint in the
 * engine worker, the HTTP server, and the load generator's streaming client — no scripted server.
 * The numbers must be internally consistent (TTFT ≤ E2E, ITL gaps per token, throughput = count ÷
 * duration, ordered percentiles) and agree with what the server counted in /metrics.
 */

const OUTPUT_TOKENS = 16;
const DATASET = { kind: 'random', inputLen: 8, outputLen: OUTPUT_TOKENS, lenSpread: 0 } as const;
const VARIANT = 'attn-2';

let server: TestServer;
let dir: string;

beforeAll(async () => {
  server = await startTestServer({
    model: 'stories260K',
    variants: [{ name: VARIANT, spec: 'attn:2,3' }],
  });
  dir = await mkdtemp(join(tmpdir(), 'dropserve-loadtest-e2e-'));
});

afterAll(async () => {
  await server?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function expectOrdered(stats: DistributionStats, count: number): void {
  expect(stats.count).toBe(count);
  expect(stats.min).toBeGreaterThanOrEqual(0);
  expect(stats.min).toBeLessThanOrEqual(stats.p50);
  expect(stats.p50).toBeLessThanOrEqual(stats.p90);
  expect(stats.p90).toBeLessThanOrEqual(stats.p95);
  expect(stats.p95).toBeLessThanOrEqual(stats.p99);
  expect(stats.p99).toBeLessThanOrEqual(stats.max);
  expect(stats.mean).toBeGreaterThanOrEqual(stats.min);
  expect(stats.mean).toBeLessThanOrEqual(stats.max);
}

/** Every check that holds for any successful run with ignore_eos and OUTPUT_TOKENS tokens. */
function expectConsistentRun(report: LoadtestReport, requests: number): void {
  const { summary } = report;
  expect(summary.failed).toBe(0);
  expect(summary.errorsByKind).toEqual({});
  expect(summary.completed).toBe(requests);
  expect(report.requests.map((r) => r.index)).toEqual(Array.from({ length: requests }, (_, i) => i));
  expect(summary.outputTokensFromChunks).toBe(0);

  const durationMs = summary.durationS * 1000;
  for (const r of report.requests) {
    expect(r.isOk, `request ${r.index}: ${r.errorKind} ${r.errorMessage}`).toBe(true);
    expect(r.status).toBe(200);
    expect(r.outputTokensSource).toBe('usage');
    expect(r.outputTokens).toBe(OUTPUT_TOKENS);
    expect(r.finishReason).toBe('length');
    expect(r.promptTokens).toBeGreaterThan(1); // BOS + the prompt words
    const ttft = r.ttftMs!;
    const e2e = r.e2eMs!;
    expect(ttft).toBeGreaterThan(0);
    expect(ttft).toBeLessThanOrEqual(e2e);
    // One streamed chunk per token: OUTPUT_TOKENS − 1 gaps, summing to the span first→last chunk.
    expect(r.itlMs).toHaveLength(OUTPUT_TOKENS - 1);
    for (const gap of r.itlMs) expect(gap).toBeGreaterThanOrEqual(0);
    const itlSum = r.itlMs.reduce((a, b) => a + b, 0);
    expect(itlSum).toBeLessThanOrEqual(e2e - ttft + 1e-6);
    // TPOT ≥ 0 per request: on a busy box the server's main thread can be descheduled while the
    // worker samples all 16 tokens, which then leave in one burst (gaps of 0); over the run it is > 0.
    expect(r.tpotMs).toBeGreaterThanOrEqual(0);
    expect(r.tpotMs!).toBeCloseTo((e2e - ttft) / (OUTPUT_TOKENS - 1), 9);
    // Every request was sent and finished inside the measured window.
    expect(r.startMs).toBeGreaterThanOrEqual(0);
    expect(r.startMs + e2e).toBeLessThanOrEqual(durationMs + 1e-6);
  }

  expect(summary.totalOutputTokens).toBe(requests * OUTPUT_TOKENS);
  expect(summary.totalInputTokens).toBe(report.requests.reduce((s, r) => s + r.promptTokens!, 0));
  expect(summary.requestThroughput).toBeCloseTo(requests / summary.durationS, 9);
  expect(summary.outputThroughput).toBeCloseTo((requests * OUTPUT_TOKENS) / summary.durationS, 9);
  expect(summary.totalTokenThroughput).toBeCloseTo(
    (summary.totalInputTokens + summary.totalOutputTokens) / summary.durationS,
    9,
  );
  expectOrdered(summary.ttftMs, requests);
  expectOrdered(summary.tpotMs, requests);
  expectOrdered(summary.e2eMs, requests);
  expectOrdered(summary.itlMs, requests * (OUTPUT_TOKENS - 1));
  expect(summary.tpotMs.mean).toBeGreaterThan(0);
  expect(summary.tpotMs.max).toBeGreaterThan(0);
  expect(summary.ttftMs.max).toBeLessThanOrEqual(summary.e2eMs.max);
}

/** Most requests in flight at once, from the records' own send and finish times. */
function peakOverlap(records: readonly RequestRecord[]): number {
  const events = records.flatMap((r) => [
    { at: r.startMs, delta: 1 },
    { at: r.startMs + r.e2eMs!, delta: -1 },
  ]);
  events.sort((a, b) => a.at - b.at || a.delta - b.delta);
  let now = 0;
  let peak = 0;
  for (const e of events) peak = Math.max(peak, (now += e.delta));
  return peak;
}

describe('dropserve loadtest against a real server (stories260K)', () => {
  it('closed loop, 4 users × 24 requests of 16 tokens: error-free, consistent, matching /metrics', async () => {
    const before = await scrapeMetrics(server.url);
    const report = await runLoadtest({
      baseUrl: server.url,
      model: server.modelName,
      concurrency: 4,
      requests: 24,
      warmup: 2,
      dataset: DATASET,
      ignoreEos: true,
      // Loose enough that every request meets it on a busy box, strict in TPOT to count something.
      slo: { ttftMs: 20_000, tpotMs: 1_000 },
      seed: 7,
    });
    expect(report.config).toMatchObject({ mode: 'closed', concurrency: 4, requests: 24, ignoreEos: true });
    expect(report.warmup).toEqual({ requests: 2, failed: 0 });
    expectConsistentRun(report, 24);

    // Closed loop: never more than 4 in flight, and 4 were in flight at some point.
    expect(report.summary.maxConcurrency).toBe(4);
    expect(peakOverlap(report.requests)).toBeLessThanOrEqual(4);

    // Goodput counts only requests meeting the SLO, so it can never exceed throughput.
    const good = report.requests.filter((r) => r.meetsSlo === true).length;
    expect(report.summary.goodRequests).toBe(good);
    expect(report.summary.goodput).toBeCloseTo(good / report.summary.durationS, 9);
    expect(report.summary.goodput!).toBeLessThanOrEqual(report.summary.requestThroughput);

    // The server counted the same tokens (warmup included: 2 more requests of 16 tokens).
    const after = await scrapeMetrics(server.url);
    const delta = (name: string): number =>
      sumOf(after, name, { variant: server.modelName }) - sumOf(before, name, { variant: server.modelName });
    expect(delta('dropserve:generation_tokens_total')).toBe(26 * OUTPUT_TOKENS);
    expect(delta('dropserve:prompt_tokens_total')).toBeGreaterThan(report.summary.totalInputTokens);
  });

  it('an SLO no request can meet makes goodput 0 while throughput is not', async () => {
    const report = await runLoadtest({
      baseUrl: server.url,
      model: server.modelName,
      concurrency: 2,
      requests: 8,
      dataset: DATASET,
      ignoreEos: true,
      // TTFT of 1 µs: below a loopback round trip. (Not TPOT: a stream that arrives in one burst has a
      // TPOT of 0 and would meet any TPOT limit.)
      slo: { ttftMs: 0.001 },
    });
    expectConsistentRun(report, 8);
    expect(report.summary.goodRequests).toBe(0);
    expect(report.summary.goodput).toBe(0);
    expect(report.summary.requestThroughput).toBeGreaterThan(0);
  });

  it('open loop (Poisson arrivals at 30 req/s) on a variant', async () => {
    const model = `${server.modelName}:${VARIANT}`;
    const before = await scrapeMetrics(server.url);
    const rate = 30;
    const requests = 24;
    const report = await runLoadtest({
      baseUrl: server.url,
      model,
      ratePerS: rate,
      requests,
      dataset: DATASET,
      ignoreEos: true,
      seed: 11,
    });
    expect(report.config).toMatchObject({ mode: 'open', ratePerS: rate, burstiness: 1, concurrency: null });
    expectConsistentRun(report, requests);

    // Arrivals follow the schedule, not the responses: sends are in order, the last one goes out at
    // requests/rate (vLLM's rescaling), and the gaps are irregular (exponential, not a fixed tick).
    const starts = report.requests.map((r) => r.startMs);
    for (let i = 1; i < starts.length; i++) expect(starts[i]!).toBeGreaterThanOrEqual(starts[i - 1]!);
    const lastScheduledMs = (requests / rate) * 1000;
    // Node timers run on a whole-millisecond loop clock, so a send can go out up to ~1 ms early.
    expect(starts[starts.length - 1]!).toBeGreaterThanOrEqual(lastScheduledMs - 5);
    expect(report.summary.durationS * 1000).toBeGreaterThanOrEqual(lastScheduledMs - 5);
    const gaps = starts.slice(1).map((s, i) => s - starts[i]!);
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    const sd = Math.sqrt(gaps.reduce((a, g) => a + (g - mean) ** 2, 0) / gaps.length);
    expect(sd / mean).toBeGreaterThan(0.4); // exponential gaps: coefficient of variation ≈ 1

    const after = await scrapeMetrics(server.url);
    const generated =
      sumOf(after, 'dropserve:generation_tokens_total', { variant: model }) -
      sumOf(before, 'dropserve:generation_tokens_total', { variant: model });
    expect(generated).toBe(requests * OUTPUT_TOKENS);
  });

  it('the CLI as a subprocess: exit code 0 and a --json report of the documented shape', async () => {
    const jsonPath = join(dir, 'run.json');
    const args = [
      'bin/dropserve.js',
      'loadtest',
      ...['--url', server.url, '--model', server.modelName],
      ...['--concurrency', '2', '--requests', '6', '--input-len', '8', '--output-len', String(OUTPUT_TOKENS)],
      ...['--ignore-eos', '--slo', 'ttft_ms:20000', '--quiet', '--json', jsonPath],
    ];
    const { code, stdout, stderr } = await new Promise<{
      code: number | null;
      stdout: string;
      stderr: string;
    }>((resolve, reject) => {
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', reject);
      child.on('close', (exitCode) => {
        clearTimeout(timer);
        resolve({ code: exitCode, stdout, stderr });
      });
    });
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(/Successful requests\s+6/);
    expect(stderr).toContain(`wrote ${jsonPath}`);

    const report = JSON.parse(await readFile(jsonPath, 'utf8'));
    expect(Object.keys(report).sort()).toEqual(
      ['commit', 'config', 'requests', 'startedAt', 'summary', 'warmup'].sort(),
    );
    expect(report.config).toMatchObject({
      baseUrl: server.url,
      model: server.modelName,
      mode: 'closed',
      concurrency: 2,
      requests: 6,
      ignoreEos: true,
      slo: { ttftMs: 20_000 },
    });
    expect(typeof report.commit).toBe('string');
    expect(Number.isNaN(Date.parse(report.startedAt))).toBe(false);
    expect(report.summary).toMatchObject({ completed: 6, failed: 0, totalOutputTokens: 6 * OUTPUT_TOKENS });
    for (const key of ['ttftMs', 'tpotMs', 'itlMs', 'e2eMs']) {
      expect(Object.keys(report.summary[key]).sort()).toEqual(
        ['count', 'max', 'mean', 'min', 'p50', 'p90', 'p95', 'p99', 'std'].sort(),
      );
    }
    expect(report.requests).toHaveLength(6);
    for (const r of report.requests) {
      expect(r).toMatchObject({
        isOk: true,
        status: 200,
        outputTokens: OUTPUT_TOKENS,
        outputTokensSource: 'usage',
      });
      expect(r.ttftMs).toBeGreaterThan(0);
      expect(r.ttftMs).toBeLessThanOrEqual(r.e2eMs);
      expect(r.itlMs).toHaveLength(OUTPUT_TOKENS - 1);
      expect(typeof r.startMs).toBe('number');
      expect(r.meetsSlo).toBe(true);
    }
  });
});
