import { getMaxListeners } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { runLoadtest } from './loadtest.ts';
import { sendStreamingRequest } from './openai-stream.ts';
import { percentile } from './stats.ts';
import { type FakePlan, type FakeUpstream, startFakeUpstream } from './testing/fake-upstream.ts';

// Only what holds on any machine, however loaded, is asserted: causality (a client receives a chunk
// after the fake server wrote it, same process and clock), the script's lower bounds (timers never
// fire early), identities between the derived metrics, and counts. How close the measurements come
// to the script is a property of the machine, not of the code, so no upper bound is asserted.

let upstream: FakeUpstream | undefined;
afterEach(async () => {
  await upstream?.close();
  upstream = undefined;
});

const stream = (ttftMs: number, itlMs: number, chunks: number, extra: Partial<FakePlan> = {}): FakePlan =>
  ({ kind: 'stream', ttftMs, itlMs, chunks, ...extra }) as FakePlan;

describe('runLoadtest against a scripted streaming server', () => {
  it('timestamps each chunk when the server wrote it (same clock, after warmup)', async () => {
    upstream = await startFakeUpstream({ plan: () => stream(100, 25, 6) });
    const target = { baseUrl: upstream.baseUrl, model: 'm', endpoint: 'completions' as const };
    const options = { ...target, ignoreEos: false, temperature: 0, timeoutMs: 10_000 };
    const receiveLag: number[] = [];
    for (let i = 0; i < 5; i++) {
      const result = await sendStreamingRequest(options, { prompt: 'hi', maxTokens: 6 });
      const served = upstream.log[i]!;
      expect(result.isOk).toBe(true);
      expect(result.sentAtMs).toBeLessThanOrEqual(served.arrivedAtMs);
      expect(result.contentAtMs).toHaveLength(6);
      result.contentAtMs.forEach((at, k) => {
        expect(at).toBeGreaterThanOrEqual(served.textWritesAtMs[k]!);
        if (i > 0) receiveLag.push(at - served.textWritesAtMs[k]!);
      });
      expect(result.lastChoiceAtMs).toBe(result.contentAtMs[5]);
      expect(result.completionTokens).toBe(6);
      expect(result.promptTokens).toBe(7);
      expect(result.finishReason).toBe('length');
    }
    expect(receiveLag.every((lag) => lag >= 0)).toBe(true);
  });

  it('measures TTFT, ITL, TPOT, E2E and goodput: never below the script, consistent with each other', async () => {
    upstream = await startFakeUpstream({ plan: () => stream(100, 25, 6) });
    const report = await runLoadtest({
      baseUrl: upstream.baseUrl,
      model: 'm',
      apiKey: 'sk-test',
      requests: 4,
      // Warmup opens the keep-alive connection and warms the JIT, so measured sends are steady.
      warmup: 2,
      concurrency: 1,
      ignoreEos: true,
      dataset: { kind: 'random', inputLen: 16, outputLen: 6, lenSpread: 0 },
      slo: { ttftMs: 1000, tpotMs: 200 },
    });
    const { summary } = report;
    expect(summary.completed).toBe(4);
    expect(summary.failed).toBe(0);
    expect(upstream.log).toHaveLength(6);
    for (const record of report.requests) {
      const served = upstream.log[record.index + 2]!;
      // Causality: the client sent before the server saw the request and received after it wrote.
      expect(record.ttftMs!).toBeGreaterThanOrEqual(served.textWritesAtMs[0]! - served.arrivedAtMs);
      expect(record.e2eMs!).toBeGreaterThanOrEqual(served.textWritesAtMs[5]! - served.arrivedAtMs);
      expect(record.ttftMs!).toBeGreaterThanOrEqual(99);
      expect(record.itlMs).toHaveLength(5);
      expect(record.outputTokens).toBe(6);
      expect(record.outputTokensSource).toBe('usage');
      // TPOT = (E2E − TTFT)/(tokens − 1); with one token per chunk that is exactly the mean ITL.
      expect(record.tpotMs).toBeCloseTo((record.e2eMs! - record.ttftMs!) / 5, 9);
      expect(record.tpotMs!).toBeCloseTo(record.itlMs.reduce((a, b) => a + b, 0) / 5, 6);
      expect(record.meetsSlo).toBe(true);
    }
    // Scripted: TTFT 100 ms, ITL 25 ms, so E2E at least 100 + 5 × 25 = 225 ms.
    expect(summary.ttftMs.p50).toBeGreaterThanOrEqual(99);
    expect(summary.e2eMs.p50).toBeGreaterThanOrEqual(224);
    expect(summary.ttftMs.p50).toBe(
      percentile(
        report.requests.map((r) => r.ttftMs!),
        50,
      ),
    );
    expect(summary.itlMs.count).toBe(20);
    expect(summary.tpotMs.count).toBe(4);
    expect(summary.totalOutputTokens).toBe(24);
    expect(summary.totalInputTokens).toBe(28);
    expect(summary.requestThroughput).toBeCloseTo(4 / summary.durationS, 9);
    expect(summary.outputThroughput).toBeCloseTo(24 / summary.durationS, 9);
    expect(summary.totalTokenThroughput).toBeCloseTo(52 / summary.durationS, 9);
    expect(summary.goodput).toBeCloseTo(summary.requestThroughput, 9);
    expect(summary.maxConcurrency).toBe(1);
    // Sequential requests: the run lasts at least four E2E latencies.
    expect(summary.durationS * 1000).toBeGreaterThanOrEqual(4 * 225 - 4);

    const body = upstream.log[2]!.body;
    expect(body).toMatchObject({
      model: 'm',
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
      ignore_eos: true,
      temperature: 0,
    });
    expect(String(body.prompt).split(' ')).toHaveLength(16);
    expect(upstream.log[2]!.authorization).toBe('Bearer sk-test');
  });

  it('counts only requests meeting every SLO towards goodput', async () => {
    // Even arrivals answer fast (0 ms TTFT), odd ones slow (240 ms): SLO TTFT ≤ 150 ms. A slow one
    // can never meet it; whether a fast one does depends on the machine, so each record's verdict
    // is checked against its own measurements and the goodput against the verdicts.
    upstream = await startFakeUpstream({ plan: ({ index }) => stream(index % 2 === 0 ? 0 : 240, 10, 3) });
    const report = await runLoadtest({
      baseUrl: upstream.baseUrl,
      model: 'm',
      requests: 4,
      concurrency: 1,
      slo: { ttftMs: 150, tpotMs: 200 },
    });
    for (const r of report.requests) {
      expect(r.meetsSlo).toBe(r.ttftMs! <= 150 && r.tpotMs! <= 200);
      if (r.index % 2 === 1) expect(r.meetsSlo).toBe(false);
    }
    const good = report.requests.filter((r) => r.meetsSlo).length;
    expect(report.summary.goodRequests).toBe(good);
    expect(report.summary.goodput).toBeCloseTo(good / report.summary.durationS, 9);
    expect(report.summary.requestThroughput).toBeCloseTo(4 / report.summary.durationS, 9);
  });

  it('counts failures by HTTP status and keeps them out of latency stats', async () => {
    upstream = await startFakeUpstream({
      plan: ({ index }) => {
        if (index === 0) return { kind: 'error', status: 503, message: 'draining' };
        if (index % 3 === 2) return { kind: 'error', status: 429, message: 'queue full' };
        return stream(20, 5, 2);
      },
    });
    const report = await runLoadtest({ baseUrl: upstream.baseUrl, model: 'm', requests: 9, concurrency: 3 });
    expect(report.summary.errorsByKind).toEqual({ http_429: 3, http_503: 1 });
    expect(report.summary.failed).toBe(4);
    expect(report.summary.completed).toBe(5);
    expect(report.summary.ttftMs.count).toBe(5);
    const throttled = report.requests.filter((r) => r.status === 429);
    expect(throttled).toHaveLength(3);
    expect(throttled.every((r) => r.errorMessage === 'queue full' && r.ttftMs === null)).toBe(true);
  });

  it('streams chat, ignores the empty role chunk, survives split events and counts chunks without usage', async () => {
    upstream = await startFakeUpstream({
      plan: () => stream(80, 20, 4, { splitEvents: true, usageCompletionTokens: null }),
    });
    const report = await runLoadtest({
      baseUrl: `${upstream.baseUrl}/v1`,
      model: 'm',
      endpoint: 'chat',
      requests: 2,
      concurrency: 1,
    });
    expect(report.summary.completed).toBe(2);
    for (const record of report.requests) {
      const served = upstream.log[record.index]!;
      expect(served.path).toBe('/v1/chat/completions');
      expect(served.body.messages).toEqual([{ role: 'user', content: expect.any(String) }]);
      // The role chunk arrives at once; TTFT must wait for the first text.
      expect(record.ttftMs!).toBeGreaterThanOrEqual(79);
      expect(record.ttftMs!).toBeGreaterThanOrEqual(served.textWritesAtMs[0]! - served.arrivedAtMs);
      expect(record.outputTokens).toBe(4);
      expect(record.outputTokensSource).toBe('chunks');
      expect(record.promptTokens).toBeNull();
      expect(record.itlMs).toHaveLength(3);
    }
    expect(report.summary.outputTokensFromChunks).toBe(2);
  });

  it('fails a stream that ends without [DONE] and excludes warmup requests from the stats', async () => {
    upstream = await startFakeUpstream({ plan: ({ index }) => stream(5, 5, 2, { omitDone: index === 3 }) });
    const report = await runLoadtest({
      baseUrl: upstream.baseUrl,
      model: 'm',
      requests: 3,
      warmup: 2,
      concurrency: 1,
    });
    expect(upstream.log).toHaveLength(5);
    expect(report.warmup).toEqual({ requests: 2, failed: 0 });
    expect(report.requests).toHaveLength(3);
    expect(report.summary.errorsByKind).toEqual({ incomplete_stream: 1 });
    expect(report.requests[1]!.errorKind).toBe('incomplete_stream');
  });

  it('reports a refused connection as a connection error', async () => {
    upstream = await startFakeUpstream({ plan: () => stream(5, 5, 2) });
    const deadUrl = upstream.baseUrl;
    await upstream.close();
    upstream = undefined;
    const report = await runLoadtest({ baseUrl: deadUrl, model: 'm', requests: 2, concurrency: 1 });
    expect(report.summary.errorsByKind).toEqual({ connection: 2 });
  });

  it('times out slow requests and cancels in-flight ones when the run is aborted', async () => {
    // The first token is ten minutes away: no request can finish, only time out or be cancelled
    // (the fake stops its script when the client hangs up).
    const controller = new AbortController();
    upstream = await startFakeUpstream({
      plan: ({ index }) => {
        // Requests 0–1 are the timeout run's; the aborted run is cancelled when its third request
        // (index 4) reaches the server, all three in flight.
        if (index === 4) controller.abort();
        return stream(600_000, 5, 2);
      },
    });
    const timedOut = await runLoadtest({
      baseUrl: upstream.baseUrl,
      model: 'm',
      requests: 2,
      timeoutMs: 100,
    });
    expect(timedOut.summary.errorsByKind).toEqual({ timeout: 2 });
    expect(timedOut.requests.every((r) => r.e2eMs === null || r.e2eMs >= 99)).toBe(true);

    const aborted = await runLoadtest({
      baseUrl: upstream.baseUrl,
      model: 'm',
      requests: 50,
      concurrency: 3,
      signal: controller.signal,
    });
    expect(aborted.requests).toHaveLength(3);
    expect(aborted.summary.errorsByKind).toEqual({ aborted: 3 });
  });

  it('more than 10 requests in flight on one run signal raise no MaxListenersExceededWarning', async () => {
    upstream = await startFakeUpstream({ plan: () => stream(60, 5, 2) });
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => {
      warnings.push(warning.name);
    };
    process.on('warning', onWarning);
    const controller = new AbortController();
    try {
      const report = await runLoadtest({
        baseUrl: upstream.baseUrl,
        model: 'm',
        concurrency: 16,
        requests: 32,
        signal: controller.signal,
      });
      expect(report.summary.completed).toBe(32);
      expect(report.summary.maxConcurrency).toBe(16);
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on next tick
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).not.toContain('MaxListenersExceededWarning');
    // The caller's signal gets its own threshold back.
    expect(getMaxListeners(controller.signal)).toBe(10);
  });

  it('open loop: sends a fixed count over exactly count/rate, as vLLM rescales it', async () => {
    upstream = await startFakeUpstream({ plan: () => stream(5, 5, 2) });
    const report = await runLoadtest({
      baseUrl: upstream.baseUrl,
      model: 'm',
      requests: 20,
      ratePerS: 50,
      seed: 3,
    });
    expect(report.config.mode).toBe('open');
    expect(report.summary.completed).toBe(20);
    // The schedule ends at 20 / 50 per s = 400 ms; a send is never early (it may be late).
    const lastSend = Math.max(...report.requests.map((r) => r.startMs));
    expect(lastSend).toBeGreaterThanOrEqual(400 - 2);
    const starts = report.requests.map((r) => r.startMs);
    expect(starts).toEqual([...starts].sort((a, b) => a - b));
  });

  it('duration bound: stops issuing at the deadline and lets in-flight requests finish', async () => {
    // Each request outlasts the 0.3 s bound (first token at 0.6 s): both users start one at once,
    // and when it finishes the deadline has passed, so exactly two requests run, both to the end.
    upstream = await startFakeUpstream({ plan: () => stream(600, 10, 2) });
    const report = await runLoadtest({
      baseUrl: upstream.baseUrl,
      model: 'm',
      durationS: 0.3,
      concurrency: 2,
    });
    expect(report.config.requests).toBeNull();
    expect(report.requests).toHaveLength(2);
    expect(report.summary.completed).toBe(2);
    expect(report.summary.failed).toBe(0);
    expect(report.summary.maxConcurrency).toBe(2);
    expect(report.summary.durationS).toBeGreaterThanOrEqual(0.6 - 0.002);
  });
});
