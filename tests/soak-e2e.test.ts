import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runLoadtestCommand } from '../cli/loadtest.ts';
import { runSoak, type SoakReport } from '../loadtests/src/soak.ts';
import { type SoakMix, SoakPlanner } from '../loadtests/src/soak-plan.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { e2eServerOptions, eventually, scrapeMetrics, sumOf } from './support/test-server.ts';

/**
 * `dropserve loadtest soak` against a real dropserve on 127.0.0.1 (stories260K in the engine
 * worker, with a pruned variant, process metrics on as in `dropserve serve`). Runs are bounded by
 * request count, not time. Which planned aborts land before the request finishes depends on timing,
 * so the checks are the ones that hold either way: every request gets one outcome, none is an error,
 * the mix is exactly the seeded plan's, and the server's own counters are consistent with ours.
 */

const VARIANT = 'attn-2';
const REQUESTS = 80;
const SEED = 11;
const MIX: Omit<SoakMix, 'models'> = {
  streamShare: 0.5,
  chatShare: 0.5,
  abortShare: 0.3,
  promptWords: 8,
  maxTokens: { min: 4, max: 16 },
};

let server: RunningServer;
let url: string;

beforeAll(async () => {
  server = await startServer(
    e2eServerOptions('stories260K', {
      collectProcessMetrics: true,
      variants: [{ name: VARIANT, spec: 'attn:2,3' }],
      shutdownGraceMs: 2_000,
    }),
  );
  url = server.httpUrl;
});

afterAll(async () => {
  await server?.close(0);
});

/** The engine holds no request and no KV: everything the soak started (aborts included) was freed. */
async function engineIdle(): Promise<boolean> {
  const samples = await scrapeMetrics(url);
  return (
    sumOf(samples, 'dropserve:num_requests_running') === 0 &&
    sumOf(samples, 'dropserve:num_requests_waiting') === 0 &&
    sumOf(samples, 'dropserve:kv_cache_usage_perc') === 0
  );
}

function finished(samples: Map<string, number>, reason: string): number {
  return sumOf(samples, 'dropserve:request_success_total', { transport: 'http', finished_reason: reason });
}

function expectEveryRequestClassified(report: SoakReport, requests: number): void {
  const { outcomes } = report;
  expect(report.requests).toBe(requests);
  expect(Object.values(outcomes).reduce((a, b) => a + b, 0)).toBe(requests);
  expect(report.errors, JSON.stringify(report.errorSamples, null, 2)).toBe(0);
  expect(report.errorsByDetail).toEqual({});
  expect(outcomes.interrupted).toBe(0);
  expect(outcomes.ok + outcomes.aborted).toBe(requests);
  // A planned abort either happened or the request finished before its abort point.
  expect(report.aborts.made + report.aborts.finishedFirst).toBe(report.aborts.planned);
  expect(outcomes.aborted).toBe(report.aborts.made);
}

describe('dropserve loadtest soak against a real server (stories260K + variant)', () => {
  it('mixed streaming/non-streaming, chat/completions, both models, 30% client aborts: no errors', async () => {
    const before = await scrapeMetrics(url);
    const report = await runSoak({
      baseUrl: url,
      concurrency: 4,
      requests: REQUESTS,
      mix: MIX,
      seed: SEED,
      // One sample before the load and one after it: no sample depends on how long the run takes.
      sampleEveryS: 3600,
      driftFromS: 0,
    });
    expectEveryRequestClassified(report, REQUESTS);
    expect(report.config.models).toEqual(['stories260K', `stories260K:${VARIANT}`]);

    // The mix is the seeded plan's whatever the timing: request i is the same request in every run.
    const planner = new SoakPlanner({ ...MIX, models: report.config.models }, SEED);
    const plans = Array.from({ length: REQUESTS }, () => planner.next());
    const count = (f: (p: (typeof plans)[number]) => boolean): number => plans.filter(f).length;
    expect(report.mix).toEqual({
      streaming: count((p) => p.isStreaming),
      nonStreaming: count((p) => !p.isStreaming),
      chat: count((p) => p.endpoint === 'chat'),
      completions: count((p) => p.endpoint === 'completions'),
      byModel: {
        stories260K: count((p) => p.model === 'stories260K'),
        [`stories260K:${VARIANT}`]: count((p) => p.model !== 'stories260K'),
      },
    });
    expect(report.aborts.planned).toBe(count((p) => p.abort !== null));
    expect(report.aborts.planned).toBeGreaterThan(0);
    for (const [point, a] of Object.entries(report.aborts.byPoint)) {
      expect(a.planned, point).toBe(count((p) => p.abort?.kind === point));
    }
    expect(report.throughput.completionTokens).toBeGreaterThan(0);

    // Memory and fds came from the server's own /metrics, before and after the load.
    const { resources } = report;
    expect(resources.samples.map((s) => s.requests)).toEqual([0, REQUESTS]);
    for (const s of resources.samples) {
      expect(s.rssBytes).toBeGreaterThan(1024 * 1024);
      expect(s.openFds).toBeGreaterThan(0);
    }
    expect(resources.rss).toMatchObject({ samples: 2, from: resources.samples[0]!.rssBytes });
    expect(resources.openFds).toMatchObject({ samples: 2, to: resources.samples[1]!.openFds });
    expect(resources.note).toBeUndefined();
    expect(report.server).not.toBeNull();

    // The server freed every request, aborted ones included, and counted consistently with us:
    // every request that completed here finished there; it cannot have counted more aborts than we
    // made (an abort may land after it finished, or before it admitted the request), nor more
    // requests than we sent; and none of them failed.
    await eventually(engineIdle, 30_000);
    await eventually(async () => {
      const after = await scrapeMetrics(url);
      const delta = (reason: string): number => finished(after, reason) - finished(before, reason);
      return delta('stop') + delta('length') >= report.outcomes.ok;
    }, 30_000);
    const after = await scrapeMetrics(url);
    const delta = (reason: string): number => finished(after, reason) - finished(before, reason);
    expect(delta('abort')).toBeLessThanOrEqual(report.outcomes.aborted);
    expect(delta('stop') + delta('length') + delta('abort')).toBeLessThanOrEqual(REQUESTS);
    expect(delta('error')).toBe(0);
  });

  it('the CLI prints the summary, writes the JSON report and exits 0 without errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dropserve-soak-'));
    const printed: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
      printed.push(args.join(' '));
    });
    vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      const jsonPath = join(dir, 'soak.json');
      const code = await runLoadtestCommand([
        'soak',
        '--url',
        url,
        '--requests',
        '12',
        '--concurrency',
        '2',
        '--variants',
        VARIANT,
        '--abort-share',
        '0.5',
        '--max-tokens',
        '6',
        '--sample-every',
        '1h',
        '--json',
        jsonPath,
        '--quiet',
      ]);
      expect(code).toBe(0);
      const text = printed.join('\n');
      expect(text).toContain('dropserve loadtest soak');
      expect(text).toMatch(/^Requests\s+12$/m);
      expect(text).toMatch(/^ {2}errors\s+0$/m);
      expect(text).toMatch(/^RSS\s+\d/m);
      const report = JSON.parse(await readFile(jsonPath, 'utf8')) as SoakReport;
      expectEveryRequestClassified(report, 12);
      expect(report.config).toMatchObject({
        models: [`stories260K:${VARIANT}`],
        concurrency: 2,
        requests: 12,
        durationS: null,
        maxTokens: { min: 6, max: 6 },
      });
      expect(report.mix.byModel).toEqual({ [`stories260K:${VARIANT}`]: 12 });
    } finally {
      vi.restoreAllMocks();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
