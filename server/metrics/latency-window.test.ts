import { describe, expect, it } from 'vitest';
import { type LatencySample, percentiles, RollingLatency } from './latency-window.ts';

const sample = (finishedMs: number, ttftMs: number, extra: Partial<LatencySample> = {}): LatencySample => ({
  startMs: finishedMs - 100,
  finishedMs,
  ttftMs,
  e2eMs: 100,
  tpotMs: 10,
  itlGapsMs: [10, 10],
  outputTokens: 3,
  ...extra,
});

describe('RollingLatency', () => {
  it('percentiles interpolate between closest ranks and skip missing values', () => {
    const p = percentiles(Float64Array.from([4, 1, 3, 2, Number.NaN]))!;
    expect([p.p50, p.p90, p.p99].map((x) => Number(x.toFixed(9)))).toEqual([2.5, 3.7, 3.97]);
    expect(percentiles(new Float64Array(0))).toBeNull();
  });

  it('keeps the last windowMs of requests per variant, and reports tokens/s over the time they cover', () => {
    let now = 10_000;
    const window = new RollingLatency({ windowMs: 5_000, now: () => now });
    for (let t = 1_000; t <= 10_000; t += 1_000) window.observe('a', sample(t, t / 1000));
    const s = window.summary('a');
    // Finished at 5 000 … 10 000 (the cutoff is now − 5 s, inclusive).
    expect(s.requests).toBe(6);
    expect([s.ttft_ms!.p50, s.ttft_ms!.p90, s.ttft_ms!.p99].map((x) => Number(x.toFixed(9)))).toEqual([
      7.5, 9.5, 9.95,
    ]);
    expect(s.itl_ms?.p50).toBe(10);
    // 18 tokens over the 5 s window (the earliest start is before the cutoff, so the span is the window).
    expect(s.output_tokens_per_s).toBeCloseTo(18 / 5);
    expect(window.summary('b')).toMatchObject({ requests: 0, ttft_ms: null, output_tokens_per_s: 0 });
    now = 100_000;
    expect(window.summary('a').requests).toBe(0);
  });

  it('bounds memory: at most maxRequests requests and maxGaps gaps per variant', () => {
    const window = new RollingLatency({ windowMs: 60_000, maxRequests: 3, maxGaps: 4, now: () => 1_000 });
    for (let i = 1; i <= 5; i++) window.observe('a', sample(1_000, i, { itlGapsMs: [i, i] }));
    const s = window.summary('a');
    expect(s.requests).toBe(3);
    expect(s.ttft_ms?.p50).toBe(4);
    // The last 4 gaps: 4, 4, 5, 5.
    expect(s.itl_ms?.p50).toBe(4.5);
  });

  it('rejects a window that could not hold anything', () => {
    expect(() => new RollingLatency({ windowMs: 0 })).toThrow(RangeError);
    expect(() => new RollingLatency({ maxRequests: 0 })).toThrow(RangeError);
  });
});
