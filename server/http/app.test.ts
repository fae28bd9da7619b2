import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import type { GenerateEvent, GenerateRequest } from '../../engine/client.ts';
import { DropserveError } from '../../engine/errors.ts';
import { FakeEngine } from '../testing/fake-engine.ts';
import { createTestApp, postJson } from '../testing/test-app.ts';

/** The app without sockets (app.request) over the fake engine: error paths the real engine rarely takes. */
const completion = { model: 'fake-model', prompt: 'hi', max_tokens: 4 };

/** A fake whose generate() fails in a chosen way. */
class FaultyEngine extends FakeEngine {
  constructor(private readonly fault: 'throw-at-start' | 'throw-mid-stream' | 'finish-error') {
    super();
  }

  override async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    if (this.fault === 'throw-at-start') throw new Error('segfault-ish: tensor shape mismatch');
    let n = 0;
    for await (const event of super.generate(request, signal)) {
      if (event.type === 'token' && ++n === 2) {
        if (this.fault === 'throw-mid-stream')
          throw new DropserveError('DS_ORT_RUN_FAILED', 'ORT run failed');
        yield { ...event };
        yield {
          type: 'finish',
          reason: 'error',
          usage: { promptTokens: 3, completionTokens: 2 },
          timings: { arrivalMs: 0, finishedMs: 1 },
          variant: request.variant,
        };
        return;
      }
      yield event;
    }
  }
}

function capturingLogger(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      lines.push(JSON.parse(String(chunk)));
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

describe('real faults are 500s, logged with the request id', () => {
  it('an unexpected engine error: 500 without internals, x-request-id, one error log line', async () => {
    const { logger, lines } = capturingLogger();
    const { app } = createTestApp(new FaultyEngine('throw-at-start'), { logger });
    const response = await postJson(app, '/v1/completions', completion, { 'x-request-id': 'req-500' });
    expect(response.status).toBe(500);
    expect(response.headers.get('x-request-id')).toBe('req-500');
    const body = (await response.json()) as { error: { message: string; type: string } };
    expect(body.error).toEqual({
      message: 'internal server error',
      type: 'internal_error',
      param: null,
      code: 'internal_error',
    });
    const logged = lines.find((l) => l.msg === 'request failed');
    expect(logged?.reqId).toBe('req-500');
    expect(JSON.stringify(logged?.err)).toContain('tensor shape mismatch');
  });

  it('a non-streaming sequence that finishes with "error" is a 500', async () => {
    const { app } = createTestApp(new FaultyEngine('finish-error'));
    const response = await postJson(app, '/v1/completions', completion);
    expect(response.status).toBe(500);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('inference_failed');
  });

  it('mid-stream: an error event, then [DONE], then the stream closes', async () => {
    for (const fault of ['throw-mid-stream', 'finish-error'] as const) {
      const { app } = createTestApp(new FaultyEngine(fault));
      const response = await postJson(app, '/v1/chat/completions', {
        model: 'fake-model',
        messages: [{ role: 'user', content: 'x' }],
        max_tokens: 10,
        stream: true,
      });
      expect(response.status).toBe(200);
      const events = (await response.text()).split('\n\n').filter((e) => e.startsWith('data: '));
      expect(events.at(-1)).toBe('data: [DONE]');
      const error = JSON.parse(events.at(-2)!.slice(6)) as { error: { code: string; type: string } };
      expect(error.error.type).toBe('internal_error');
      expect(error.error.code).toBe('inference_failed');
    }
  });
});

describe('engine errors map through the one table', () => {
  it('DS_OVERLOADED → 429 with Retry-After, counted as rejected', async () => {
    // The first request holds the only slot: its first token is an hour away, until it is cancelled.
    const engine = new FakeEngine({ maxRunning: 1, maxQueue: 0, tokenDelayMs: 3_600_000 });
    const { app, metrics } = createTestApp(engine);
    const holder = new AbortController();
    const held = Promise.resolve(
      app.request('/v1/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(completion),
        signal: holder.signal,
      }),
    );
    await vi.waitFor(() => expect(engine.variants()[0]!.requestsRunning).toBe(1), { timeout: 60_000 });
    for (const stream of [false, true]) {
      const rejected = await postJson(app, '/v1/completions', { ...completion, stream });
      expect(rejected.status).toBe(429);
      expect(rejected.headers.get('retry-after')).toBe('1');
      expect(((await rejected.json()) as { error: { type: string } }).error.type).toBe('rate_limit_error');
    }
    const text = await metrics.registry.metrics();
    expect(text).toContain('dropserve:request_rejected_total{transport="http",reason="server_overloaded"} 2');
    holder.abort();
    await held.catch(() => {});
    await vi.waitFor(() => expect(engine.variants()[0]!.requestsRunning).toBe(0), { timeout: 60_000 });
    expect(engine.abortedCount).toBe(1);
  });

  it('n > 1 where one choice is refused: 429 and the admitted siblings are cancelled', async () => {
    const engine = new FakeEngine({ maxRunning: 2, maxQueue: 0, tokenDelayMs: 2 });
    const { app } = createTestApp(engine);
    const response = await postJson(app, '/v1/completions', { ...completion, n: 3, max_tokens: 50 });
    expect(response.status).toBe(429);
    await vi.waitFor(() => expect(engine.variants()[0]!.requestsRunning).toBe(0), { timeout: 60_000 });
  });

  it('503 while loading and after the engine is gone', async () => {
    const { app, lifecycle } = createTestApp(undefined);
    const loading = await app.request('/v1/models');
    expect(loading.status).toBe(503);
    expect(loading.headers.get('retry-after')).toBe('5');
    lifecycle.setEngine(new FakeEngine());
    expect((await app.request('/v1/models')).status).toBe(200);
    void lifecycle.drain(0);
    const draining = await app.request('/v1/models');
    expect(draining.status).toBe(503);
    expect(((await draining.json()) as { error: { code: string } }).error.code).toBe('shutting_down');
  });
});

describe('what reaches the engine', () => {
  it('n choices get seed, seed+1, …; stop ids, ignore_eos and logprobs pass through; BOS once', async () => {
    const engine = new FakeEngine();
    const { app } = createTestApp(engine);
    const response = await postJson(app, '/v1/completions', {
      ...completion,
      n: 3,
      seed: 40,
      stop_token_ids: [7],
      ignore_eos: true,
      logprobs: 2,
    });
    expect(response.status).toBe(200);
    const seen = engine.recentRequests.slice(-3);
    expect(seen.map((r) => r.sampling.seed)).toEqual([40, 41, 42]);
    expect(
      seen.every((r) => r.stopTokenIds?.[0] === 7 && r.ignoreEos && r.logprobs && r.topLogprobs === 2),
    ).toBe(true);
    expect(seen[0]!.promptTokenIds).toEqual([1, 3 + 104, 3 + 105]);
    expect(new Set(seen.map((r) => r.requestId)).size).toBe(3);
  });
});
