import { describe, expect, it } from 'vitest';
import { parseDurationS } from '../../cli/loadtest.ts';
import { checkCompletionBody, checkUsage, parseErrorBody, StreamChecker } from './soak-check.ts';
import { bucketMeans, computeDrift, leastSquaresSlope } from './soak-drift.ts';
import {
  BEFORE_RESPONSE_MAX_DELAY_MS,
  chooseAbortPoint,
  parseTokenRange,
  resolveModels,
  type SoakMix,
  SoakPlanner,
} from './soak-plan.ts';
import { formatElapsed, formatSoakProgress } from './soak-report.ts';
import { classifyEnding, isErrorOutcome } from './soak-request.ts';
import {
  counterDelta,
  parsePrometheusText,
  readProcResources,
  serverCounters,
  sumByLabel,
} from './soak-resources.ts';

const MIX: SoakMix = {
  models: ['m', 'm:attn-2'],
  streamShare: 0.5,
  chatShare: 0.5,
  abortShare: 0.2,
  promptWords: 4,
  maxTokens: { min: 4, max: 12 },
};

function plans(mix: SoakMix, seed: number, n: number): ReturnType<SoakPlanner['next']>[] {
  const planner = new SoakPlanner(mix, seed);
  return Array.from({ length: n }, () => planner.next());
}

describe('soak flags', () => {
  it('parses durations the way --duration 10m is written', () => {
    expect(parseDurationS('duration', '10m')).toBe(600);
    expect(parseDurationS('duration', '90s')).toBe(90);
    expect(parseDurationS('duration', '45')).toBe(45);
    expect(parseDurationS('duration', '1.5h')).toBe(5400);
    expect(parseDurationS('sample-every', '500ms')).toBe(0.5);
    expect(() => parseDurationS('duration', '10 minutes')).toThrow(/--duration: expected a duration/);
    expect(() => parseDurationS('duration', '0s')).toThrow(/longer than zero/);
  });

  it('parses --max-tokens as one length or a range', () => {
    expect(parseTokenRange('32')).toEqual({ min: 32, max: 32 });
    expect(parseTokenRange('8-64')).toEqual({ min: 8, max: 64 });
    expect(parseTokenRange('64-8')).toBeNull();
    expect(parseTokenRange('0')).toBeNull();
    expect(parseTokenRange('a-b')).toBeNull();
  });

  it('resolves --variants against the served ids, by full id or short variant name', () => {
    const served = ['stories260K', 'stories260K:attn-2', 'stories260K:mlp-1'];
    expect(resolveModels('all', served)).toEqual(served);
    expect(resolveModels(['attn-2', 'stories260K', 'stories260K:attn-2'], served)).toEqual([
      'stories260K:attn-2',
      'stories260K',
    ]);
    expect(() => resolveModels(['attn-9'], served)).toThrow(
      /no served model or variant named 'attn-9'.*mlp-1/,
    );
  });
});

describe('soak request plans', () => {
  it('are the same sequence for the same seed, and differ for another', () => {
    expect(plans(MIX, 7, 50)).toEqual(plans(MIX, 7, 50));
    expect(plans(MIX, 8, 50)).not.toEqual(plans(MIX, 7, 50));
    expect(plans(MIX, 7, 50).map((p) => p.index)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('follow the shares: every model, both endpoints, both modes, about the abort share', () => {
    const all = plans(MIX, 1, 2000);
    const share = (f: (p: (typeof all)[number]) => boolean): number => all.filter(f).length / all.length;
    expect(new Set(all.map((p) => p.model))).toEqual(new Set(MIX.models));
    expect(share((p) => p.isStreaming)).toBeCloseTo(0.5, 1);
    expect(share((p) => p.endpoint === 'chat')).toBeCloseTo(0.5, 1);
    expect(share((p) => p.abort !== null)).toBeCloseTo(0.2, 1);
    for (const p of all) {
      expect(p.spec.maxTokens).toBeGreaterThanOrEqual(4);
      expect(p.spec.maxTokens).toBeLessThanOrEqual(12);
      expect(p.endpoint === 'chat' ? p.spec.messages?.[0]?.content : p.spec.prompt).toMatch(/^\w+( \w+){3}$/);
      // A non-streaming request has one response: it can only be cut before it.
      if (!p.isStreaming && p.abort) expect(p.abort.kind).toBe('before-response');
    }
    expect(new Set(all.filter((p) => p.isStreaming && p.abort).map((p) => p.abort!.kind))).toEqual(
      new Set(['before-response', 'after-first-token', 'mid-stream']),
    );
  });

  it('with shares 0 and 1 send nothing or everything that way', () => {
    const none = plans({ ...MIX, streamShare: 0, chatShare: 0, abortShare: 0 }, 3, 200);
    expect(none.every((p) => !p.isStreaming && p.endpoint === 'completions' && p.abort === null)).toBe(true);
    const every = plans({ ...MIX, streamShare: 1, chatShare: 1, abortShare: 1 }, 3, 200);
    expect(every.every((p) => p.isStreaming && p.endpoint === 'chat' && p.abort !== null)).toBe(true);
    expect(() => new SoakPlanner({ ...MIX, abortShare: 1.5 }, 0)).toThrow(/abort share/);
    expect(() => new SoakPlanner({ ...MIX, models: [] }, 0)).toThrow(/at least one model/);
  });

  it('place abort points inside the request', () => {
    expect(chooseAbortPoint(false, 16, 0.99, 0.5)).toEqual({ kind: 'before-response', delayMs: 50 });
    expect(chooseAbortPoint(true, 16, 0, 0.999)).toEqual({
      kind: 'before-response',
      delayMs: BEFORE_RESPONSE_MAX_DELAY_MS - 1,
    });
    expect(chooseAbortPoint(true, 16, 0.5, 0.3)).toEqual({ kind: 'after-first-token' });
    // mid-stream: from the 2nd chunk to the one before the last possible.
    expect(chooseAbortPoint(true, 16, 0.9, 0)).toEqual({ kind: 'mid-stream', afterChunks: 2 });
    expect(chooseAbortPoint(true, 16, 0.9, 0.9999)).toEqual({ kind: 'mid-stream', afterChunks: 15 });
    expect(chooseAbortPoint(true, 1, 0.9, 0.9999)).toEqual({ kind: 'mid-stream', afterChunks: 2 });
  });
});

describe('soak outcome classification', () => {
  it('judges a completed request on its answer, even when an abort was planned', () => {
    expect(classifyEnding({ type: 'complete', problem: null, completionTokens: 9 }, null)).toEqual({
      kind: 'ok',
      completionTokens: 9,
      isAbortMissed: false,
    });
    expect(classifyEnding({ type: 'complete', problem: null, completionTokens: 3 }, 'mid-stream')).toEqual({
      kind: 'ok',
      completionTokens: 3,
      isAbortMissed: true,
    });
    const problem = { kind: 'protocol_error', key: 'missing_done', message: 'no [DONE]' } as const;
    expect(classifyEnding({ type: 'complete', problem, completionTokens: 3 }, null)).toMatchObject({
      kind: 'protocol_error',
      detail: 'missing_done',
    });
  });

  it('names HTTP errors by status and OpenAI error code', () => {
    const body = JSON.stringify({
      error: { message: 'queue full', type: 'server_error', param: null, code: 'server_overloaded' },
    });
    expect(classifyEnding({ type: 'http_status', status: 503, body }, null)).toMatchObject({
      kind: 'http_error',
      detail: 'http_503 server_overloaded',
      message: 'queue full',
    });
    expect(
      classifyEnding({ type: 'http_status', status: 502, body: '<html>bad gateway' }, 'mid-stream'),
    ).toMatchObject({ kind: 'http_error', detail: 'http_502 -' });
  });

  it('tells our own cuts (planned, interrupt) from timeouts and socket errors', () => {
    expect(classifyEnding({ type: 'cut', cause: 'planned' }, 'after-first-token')).toMatchObject({
      kind: 'aborted',
      detail: 'after-first-token',
    });
    expect(classifyEnding({ type: 'cut', cause: 'interrupted' }, null).kind).toBe('interrupted');
    expect(classifyEnding({ type: 'cut', cause: 'timeout' }, null)).toMatchObject({
      kind: 'network_error',
      detail: 'timeout',
    });
    const reset = Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' });
    expect(classifyEnding({ type: 'thrown', error: reset }, null)).toMatchObject({
      kind: 'network_error',
      detail: 'UND_ERR_SOCKET',
    });
    expect(['ok', 'aborted', 'interrupted'].some((k) => isErrorOutcome(k as never))).toBe(false);
    for (const k of ['http_error', 'stream_error', 'protocol_error', 'network_error'] as const) {
      expect(isErrorOutcome(k)).toBe(true);
    }
  });
});

describe('soak answer checks', () => {
  const usage = (prompt: number, completion: number, total: number | null = prompt + completion) => ({
    promptTokens: prompt,
    completionTokens: completion,
    totalTokens: total,
  });

  it('checks that usage adds up and agrees with the finish reason and the chunks', () => {
    expect(checkUsage(usage(5, 8), { maxTokens: 8, finishReason: 'length', textChunks: 8 })).toBeNull();
    expect(checkUsage(usage(5, 3), { maxTokens: 8, finishReason: 'stop', textChunks: 2 })).toBeNull();
    const mismatch = (u: ReturnType<typeof usage>, e: Parameters<typeof checkUsage>[1]) =>
      checkUsage(u, e)?.key;
    expect(mismatch(usage(5, 7), { maxTokens: 8, finishReason: 'length' })).toBe('usage_mismatch');
    expect(mismatch(usage(5, 9), { maxTokens: 8, finishReason: 'stop' })).toBe('usage_mismatch');
    expect(mismatch(usage(5, 8, 12), { maxTokens: 8, finishReason: 'length' })).toBe('usage_mismatch');
    expect(mismatch(usage(5, 3), { maxTokens: 8, finishReason: 'stop', textChunks: 4 })).toBe(
      'usage_mismatch',
    );
    expect(mismatch(usage(0, 3), { maxTokens: 8, finishReason: 'stop' })).toBe('usage_mismatch');
  });

  it('accepts a well-formed non-streaming answer and names what is wrong with others', () => {
    const answer = (over: Record<string, unknown> = {}) =>
      JSON.stringify({
        object: 'chat.completion',
        model: 'm',
        choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 4, completion_tokens: 1, total_tokens: 5 },
        ...over,
      });
    expect(checkCompletionBody('chat', 'm', 8, answer())).toEqual({
      problem: null,
      completionTokens: 1,
      finishReason: 'stop',
    });
    const key = (text: string, endpoint: 'chat' | 'completions' = 'chat') =>
      checkCompletionBody(endpoint, 'm', 8, text).problem?.key;
    expect(key('{"error"')).toBe('bad_json');
    expect(key(answer(), 'completions')).toBe('bad_shape');
    expect(key(answer({ model: 'other' }))).toBe('wrong_model');
    expect(key(answer({ usage: undefined }))).toBe('missing_usage');
    expect(key(answer({ choices: [{ message: { content: 'x' }, finish_reason: 'abort' }] }))).toBe(
      'bad_finish_reason',
    );
  });

  const chunk = (text: string, finish: string | null = null, usageField: unknown = null) => ({
    type: 'message',
    data: JSON.stringify({
      object: 'text_completion',
      model: 'm',
      choices: finish === 'usage-only' ? [] : [{ index: 0, text, finish_reason: finish }],
      usage: usageField,
    }),
  });
  const done = { type: 'message', data: '[DONE]' };
  const usageChunk = (completion: number) =>
    chunk('', 'usage-only', {
      prompt_tokens: 3,
      completion_tokens: completion,
      total_tokens: 3 + completion,
    });

  function runStream(events: { type: string; data: string }[], maxTokens = 3) {
    const checker = new StreamChecker('completions', 'm', maxTokens);
    for (const e of events) if (!checker.onEvent(e)) break;
    return checker;
  }

  it('follows a well-formed stream to [DONE]', () => {
    const checker = runStream([chunk('a'), chunk('b'), chunk('c', 'length'), usageChunk(3), done]);
    expect(checker.end()).toBeNull();
    expect(checker.textChunks).toBe(3);
    expect(checker.usage?.completionTokens).toBe(3);
  });

  it('reports a stream without [DONE], usage, or finish reason, and one with a wrong count', () => {
    expect(runStream([chunk('a'), chunk('b', 'stop'), usageChunk(2)]).end()?.key).toBe('missing_done');
    expect(runStream([chunk('a'), chunk('b', 'stop'), done]).end()?.key).toBe('missing_usage');
    expect(runStream([chunk('a'), chunk('b'), usageChunk(2), done]).end()?.key).toBe('missing_finish_reason');
    expect(runStream([chunk('a'), chunk('b', 'length'), usageChunk(2), done]).end()?.key).toBe(
      'usage_mismatch',
    );
    expect(runStream([chunk('a', 'stop'), chunk('b'), usageChunk(2), done]).end()?.key).toBe(
      'text_after_finish',
    );
    expect(runStream([chunk('a', 'stop'), usageChunk(1), done, chunk('x')]).end()?.key).toBe(
      'data_after_done',
    );
    expect(runStream([{ type: 'message', data: '{"object":' }]).end()?.key).toBe('bad_chunk');
  });

  it('reports an error event inside a 200 stream as a stream error with its code', () => {
    const error = {
      type: 'message',
      data: JSON.stringify({ error: { message: 'engine died', code: 'internal' } }),
    };
    const problem = runStream([chunk('a'), error, done]).end();
    expect(problem).toEqual({ kind: 'stream_error', key: 'internal', message: 'engine died' });
    expect(parseErrorBody('{"error":{"message":"x","code":429}}').code).toBe('429');
  });
});

describe('soak drift', () => {
  it('measures from the first sample at or after the reference time to the last', () => {
    // 100 MiB growing by 1 MiB a minute, sampled every 30 s for 10 minutes; startup spike before 2 m.
    const MiB = 1024 * 1024;
    const series = Array.from({ length: 21 }, (_, i) => ({
      atS: i * 30,
      value: i < 3 ? 50 * MiB * i : 100 * MiB + (i * 30 * MiB) / 60,
    }));
    const drift = computeDrift(series, 120)!;
    expect(drift.fromS).toBe(120);
    expect(drift.toS).toBe(600);
    expect(drift.from).toBe(102 * MiB);
    expect(drift.to).toBe(110 * MiB);
    expect(drift.change).toBe(8 * MiB);
    expect(drift.changePct).toBeCloseTo((8 / 102) * 100, 9);
    expect(drift.changePerHour).toBeCloseTo(60 * MiB, 6);
    expect(drift.slopePerHour).toBeCloseTo(60 * MiB, 6);
    // Minute windows: samples at 120, 150 s and at 570, 600 s.
    expect(drift.windowS).toBe(60);
    expect(drift.fromMean).toBe(102.25 * MiB);
    expect(drift.toMean).toBe(109.75 * MiB);
    expect(drift.min).toBe(102 * MiB);
    expect(drift.max).toBe(110 * MiB);
    expect(drift.samples).toBe(17);
    expect(drift.isReferenceEarly).toBe(false);
  });

  it('skips samples without a reading and falls back to the first when the run is short', () => {
    const drift = computeDrift(
      [
        { atS: 0, value: 40 },
        { atS: 10, value: null },
        { atS: 20, value: 44 },
      ],
      120,
    )!;
    expect(drift).toMatchObject({ fromS: 0, from: 40, toS: 20, to: 44, change: 4, isReferenceEarly: true });
    expect(computeDrift([{ atS: 0, value: 1 }], 0)).toBeNull();
    expect(
      computeDrift(
        [
          { atS: 0, value: null },
          { atS: 5, value: null },
        ],
        0,
      ),
    ).toBeNull();
  });

  it('averages samples per bucket for the timeline', () => {
    const series = [0, 30, 60, 90, 100, 200].map((atS) => ({ atS, value: atS }));
    expect(bucketMeans([...series, { atS: 150, value: null }], 60)).toEqual([
      { startS: 0, mean: 15 },
      { startS: 60, mean: (60 + 90 + 100) / 3 },
      { startS: 180, mean: 200 },
    ]);
  });

  it('fits the slope of a line exactly, and 0 to a constant or a single point', () => {
    expect(leastSquaresSlope([0, 10, 20, 30].map((atS) => ({ atS, value: 3 * atS + 1 })))).toBeCloseTo(3, 12);
    expect(leastSquaresSlope([0, 10, 20].map((atS) => ({ atS, value: 7 })))).toBe(0);
    expect(leastSquaresSlope([{ atS: 3, value: 1 }])).toBe(0);
  });
});

describe('soak server readings', () => {
  const exposition = [
    '# HELP process_resident_memory_bytes Resident memory size in bytes.',
    '# TYPE process_resident_memory_bytes gauge',
    'process_resident_memory_bytes 203685888',
    'process_open_fds 41',
    'dropserve:request_success_total{variant="m",transport="http",finished_reason="length"} 10',
    'dropserve:request_success_total{variant="m:attn-2",transport="http",finished_reason="length"} 5',
    'dropserve:request_success_total{variant="m",transport="http",finished_reason="abort"} 2',
    'dropserve:request_success_total{variant="m",transport="grpc",finished_reason="abort"} 100',
    'dropserve:request_rejected_total{transport="http",reason="server overloaded"} 1',
  ].join('\n');

  it('reads process metrics and sums the request counters by label', () => {
    const samples = parsePrometheusText(exposition);
    expect(samples.get('process_resident_memory_bytes')).toBe(203685888);
    expect(sumByLabel(samples, 'dropserve:request_success_total', 'variant')).toEqual({
      m: 112,
      'm:attn-2': 5,
    });
    expect(serverCounters(samples)).toEqual({
      finishedByReason: { length: 15, abort: 2 },
      rejectedByReason: { 'server overloaded': 1 },
    });
    expect(counterDelta({ length: 15, abort: 2 }, { length: 20, abort: 2, stop: 1 })).toEqual({
      length: 5,
      abort: 0,
      stop: 1,
    });
  });

  it('reads RSS and fds of a local process from /proc', async () => {
    const reading = await readProcResources(process.pid);
    expect(reading.rssBytes).toBeGreaterThan(1024 * 1024);
    expect(reading.openFds).toBeGreaterThanOrEqual(3);
    await expect(readProcResources(2 ** 30)).rejects.toThrow();
  });

  it('prints a progress line per sample', () => {
    expect(formatElapsed(0)).toBe('0s');
    expect(formatElapsed(125)).toBe('2m05s');
    expect(formatElapsed(3720)).toBe('1h02m');
    const line = formatSoakProgress({
      atS: 600,
      rssBytes: 210 * 1024 * 1024,
      openFds: 43,
      requests: 1200,
      errors: 0,
      aborted: 118,
      inFlight: 8,
    });
    expect(line).toBe('soak 10m00s  requests 1200  errors 0  aborted 118  in flight 8  rss 210 MiB  fds 43');
  });
});
