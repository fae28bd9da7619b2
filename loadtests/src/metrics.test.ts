import { describe, expect, it } from 'vitest';
import { summarize, toRequestRecord } from './metrics.ts';
import type { StreamResult } from './openai-stream.ts';

const result = (over: Partial<StreamResult>): StreamResult => ({
  isOk: true,
  status: 200,
  sentAtMs: 1000,
  contentAtMs: [],
  lastChoiceAtMs: null,
  endedAtMs: 0,
  promptTokens: 10,
  completionTokens: null,
  finishReason: 'length',
  textLength: 0,
  ...over,
});

describe('request metrics (vLLM bench serve definitions)', () => {
  it('derives TTFT, every ITL gap, TPOT and E2E from chunk arrival times', () => {
    const record = toRequestRecord(
      0,
      result({ contentAtMs: [1100, 1120, 1150, 1160], lastChoiceAtMs: 1170, completionTokens: 5 }),
      900,
      5,
      { ttftMs: 100, tpotMs: 20 },
    );
    expect(record.startMs).toBe(100);
    expect(record.ttftMs).toBe(100);
    expect(record.itlMs).toEqual([20, 30, 10]);
    expect(record.e2eMs).toBe(170); // last chunk carrying choices
    expect(record.outputTokens).toBe(5); // from usage, not the 4 chunks
    expect(record.tpotMs).toBe((170 - 100) / (5 - 1));
    expect(record.meetsSlo).toBe(true);
  });

  it('falls back to counting chunks and excludes ≤ 1-token requests from TPOT (0 for goodput)', () => {
    const single = toRequestRecord(0, result({ contentAtMs: [1300] }), 1000, 1, { tpotMs: 1 });
    expect(single.outputTokens).toBe(1);
    expect(single.outputTokensSource).toBe('chunks');
    expect(single.tpotMs).toBeNull();
    expect(single.e2eMs).toBe(300);
    expect(single.meetsSlo).toBe(true);
    const slow = toRequestRecord(1, result({ contentAtMs: [1300] }), 1000, 1, { ttftMs: 299 });
    expect(slow.meetsSlo).toBe(false);
  });

  it('summarises throughput over the run duration and counts errors by kind', () => {
    const ok = (i: number, ttft: number) =>
      toRequestRecord(
        i,
        result({ contentAtMs: [1000 + ttft, 1000 + ttft + 10], completionTokens: 2 }),
        1000,
        2,
        {
          ttftMs: 50,
        },
      );
    const failed = (i: number, kind: string) =>
      toRequestRecord(i, result({ isOk: false, status: 429, errorKind: kind, endedAtMs: 1005 }), 1000, 2, {});
    const records = [
      ok(0, 40),
      ok(1, 60),
      ok(2, 45),
      failed(3, 'http_429'),
      failed(4, 'http_429'),
      failed(5, 'timeout'),
    ];
    const summary = summarize(records, 2000, { ttftMs: 50 }, 3);
    expect(summary.completed).toBe(3);
    expect(summary.failed).toBe(3);
    expect(summary.errorsByKind).toEqual({ http_429: 2, timeout: 1 });
    expect(summary.durationS).toBe(2);
    expect(summary.requestThroughput).toBe(1.5);
    expect(summary.outputThroughput).toBe(3);
    expect(summary.totalTokenThroughput).toBe((30 + 6) / 2);
    expect(summary.goodRequests).toBe(2);
    expect(summary.goodput).toBe(1);
    expect(summary.ttftMs.count).toBe(3);
    expect(summary.ttftMs.mean).toBeCloseTo(145 / 3, 12);
    expect(summary.itlMs.count).toBe(3);
    expect(summary.maxConcurrency).toBe(3);
    expect(summarize(records, 2000, {}, 3).goodput).toBeNull();
  });
});
