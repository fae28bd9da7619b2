import http from 'node:http';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ForwardInput } from '../engine/graph/io.ts';
import {
  type CancelCountingEngine,
  createGatedEngine,
  type GatedRunner,
  lastPosition,
} from './support/gated-runner.ts';
import {
  eventually,
  scrapeMetrics,
  startTestServer,
  sumOf,
  TEST_MODEL_NAME,
  type TestServer,
  testModel,
} from './support/test-server.ts';

/**
 * Concurrency, cancellation, overload and metrics on the real engine: many streams at once, clients
 * that walk away (their sequences must be cancelled and their KV freed), a full queue answering 429,
 * and /metrics after all that traffic.
 */
let t: TestServer;
const MODEL = TEST_MODEL_NAME;
const PRUNED = `${TEST_MODEL_NAME}:attn-2`;
type Extra = { ignore_eos?: boolean };

beforeAll(async () => {
  t = await startTestServer({ variants: [{ name: 'attn-2', spec: 'attn:1,3' }] });
});
afterAll(async () => {
  await t?.close();
});

async function engineIdleAt(server: TestServer): Promise<boolean> {
  const samples = await scrapeMetrics(server.url);
  return (
    sumOf(samples, 'dropserve:num_requests_running') === 0 &&
    sumOf(samples, 'dropserve:num_requests_waiting') === 0 &&
    sumOf(samples, 'dropserve:kv_cache_usage_perc') === 0
  );
}
const engineIdle = (): Promise<boolean> => engineIdleAt(t);

async function expectVariantsIdle(server: TestServer): Promise<void> {
  const variants = (await (await fetch(`${server.url}/v1/variants`)).json()) as {
    requests_running: number;
    kv_cache_usage_perc: number;
  }[];
  expect(variants.every((v) => v.requests_running === 0 && v.kv_cache_usage_perc === 0)).toBe(true);
}

/**
 * One client that streams a completion (full model or the pruned variant by parity) and walks away
 * as soon as text arrives. Seeded, so each stream's tokens are the same on every run.
 */
async function abandonAfterFirstText(server: TestServer, i: number, maxTokens = 200): Promise<void> {
  const controller = new AbortController();
  const stream = await server.client.completions.create(
    {
      model: i % 2 === 0 ? MODEL : PRUNED,
      prompt: `abandon ${i}`,
      max_tokens: maxTokens,
      ignore_eos: true,
      seed: i,
      stream: true,
    } as OpenAI.CompletionCreateParamsStreaming & Extra,
    { signal: controller.signal },
  );
  try {
    for await (const chunk of stream) {
      if (chunk.choices[0]?.text) controller.abort();
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError' && !/abort/i.test(String(e))) throw e;
  }
}

describe('concurrency', () => {
  it('32 concurrent streams all complete with every token', async () => {
    const results = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        const stream = await t.client.completions.create({
          model: i % 2 === 0 ? MODEL : PRUNED,
          prompt: `stream ${i}`,
          max_tokens: 20,
          ignore_eos: true,
          logprobs: 0,
          stream: true,
        } as OpenAI.CompletionCreateParamsStreaming & Extra);
        let tokens = 0;
        let finish: string | null = null;
        for await (const chunk of stream) {
          for (const c of chunk.choices) {
            tokens += c.logprobs?.tokens?.length ?? 0;
            finish = c.finish_reason ?? finish;
          }
        }
        return { tokens, finish };
      }),
    );
    expect(results.every((r) => r.tokens === 20 && r.finish === 'length')).toBe(true);
    await eventually(engineIdle);
  });

  it('50 streams abandoned after their first tokens (worker engine): each ends as an abort or at its length, nothing left running, KV back to 0', async () => {
    // Through the worker, when an abort reaches the engine is up to the machine: a stream may
    // finish first. What holds in every interleaving is checked here; the cancellation
    // suite below makes every abort arrive first and counts them exactly.
    const finished = async (): Promise<number> => {
      const samples = await scrapeMetrics(t.url);
      return (
        sumOf(samples, 'dropserve:request_success_total', { finished_reason: 'abort' }) +
        sumOf(samples, 'dropserve:request_success_total', { finished_reason: 'length' })
      );
    };
    const before = await finished();
    await Promise.all(Array.from({ length: 50 }, (_, i) => abandonAfterFirstText(t, i)));
    await eventually(async () => (await finished()) - before === 50, 60_000);
    await eventually(engineIdle, 60_000);
    expect((await finished()) - before).toBe(50);
    await expectVariantsIdle(t);
  });
});

/**
 * Cancellation counted exactly: the server runs an in-process engine whose model runs pass a gate
 * (tests/support/gated-runner.ts). A decode run that reaches position HOLD_AT waits there until every
 * client's abort has reached the engine, so no sequence can end at max_tokens first; every step
 * before that runs the real model.
 */
describe('cancellation through HTTP (engine runs held at a gate)', () => {
  const HOLD_AT = 120;
  const MAX_TOKENS = 200; // a prompt of n tokens ends at position n + 198 > HOLD_AT
  let g: TestServer;
  let engine: CancelCountingEngine;
  let gate: GatedRunner;
  /** Whether a run must wait: set by each test, rechecked by gate.recheck(). */
  let isHeld: (input: ForwardInput) => boolean = () => false;

  beforeAll(async () => {
    g = await startTestServer({
      createEngine: async () => {
        ({ engine, gate } = await createGatedEngine(
          {
            model: testModel(),
            servedModelName: TEST_MODEL_NAME,
            variants: [{ name: 'attn-2', spec: { dropAttention: [1, 3], dropMlp: [] } }],
            kvCacheBytes: 64 * 1024 * 1024,
          },
          (input) => isHeld(input),
        ));
        return engine;
      },
    });
  });
  afterAll(async () => {
    isHeld = () => false;
    gate?.recheck();
    await g?.close();
  });

  const aborts = async (): Promise<number> =>
    sumOf(await scrapeMetrics(g.url), 'dropserve:request_success_total', { finished_reason: 'abort' });

  it('50 streams abandoned after their first tokens are cancelled: 50 aborts counted, nothing left running, KV back to 0', async () => {
    const abortsBefore = await aborts();
    const cancelledBefore = engine.cancellations;
    // Nothing runs until all 50 are in the engine, so all are prefilled long before any reaches HOLD_AT.
    let phase: 'admitting' | 'decoding' = 'admitting';
    isHeld = (input) => phase === 'admitting' || lastPosition(input) >= HOLD_AT;
    const clients = Promise.all(
      Array.from({ length: 50 }, (_, i) => abandonAfterFirstText(g, i, MAX_TOKENS)),
    );
    await eventually(async () => {
      const samples = await scrapeMetrics(g.url);
      return (
        sumOf(samples, 'dropserve:num_requests_running') +
          sumOf(samples, 'dropserve:num_requests_waiting') ===
        50
      );
    }, 60_000);
    phase = 'decoding';
    gate.recheck();
    await clients;
    // Every client has left; once each abort has reached the engine, the held runs may go on.
    await eventually(() => engine.cancellations - cancelledBefore === 50, 60_000);
    isHeld = () => false;
    gate.recheck();
    await eventually(() => engineIdleAt(g), 60_000);
    expect((await aborts()) - abortsBefore).toBe(50);
    await expectVariantsIdle(g);
  });

  it('a non-streaming client that disconnects cancels its sequence (the request signal fires on socket close)', async () => {
    const abortsBefore = await aborts();
    const cancelledBefore = engine.cancellations;
    isHeld = (input) => lastPosition(input) >= HOLD_AT;
    const body = JSON.stringify({ model: MODEL, prompt: 'long', max_tokens: 250, ignore_eos: true });
    const url = new URL(`${g.url}/v1/completions`);
    const request = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    request.on('error', () => {});
    request.end(body);
    // The sequence runs (and cannot finish: its last tokens lie beyond HOLD_AT); hang up without
    // reading a byte.
    await eventually(
      async () => sumOf(await scrapeMetrics(g.url), 'dropserve:num_requests_running') > 0,
      60_000,
    );
    request.destroy();
    await eventually(() => engine.cancellations - cancelledBefore === 1, 60_000);
    isHeld = () => false;
    gate.recheck();
    await eventually(() => engineIdleAt(g), 60_000);
    expect((await aborts()) - abortsBefore).toBe(1);
    await expectVariantsIdle(g);
  });
});

describe('metrics after traffic', () => {
  it('/metrics exposes every dropserve metric with the variant label', async () => {
    await t.client.chat.completions.create({
      model: PRUNED,
      messages: [{ role: 'user', content: 'count me' }],
      max_tokens: 5,
    });
    const text = await (await fetch(`${t.url}/metrics`)).text();
    const histograms = [
      'time_to_first_token_seconds',
      'inter_token_latency_seconds',
      'request_time_per_output_token_seconds',
      'e2e_request_latency_seconds',
      'request_queue_time_seconds',
      'request_prefill_time_seconds',
      'request_decode_time_seconds',
    ];
    for (const name of histograms) {
      for (const variant of [MODEL, PRUNED]) {
        expect(text).toMatch(
          new RegExp(`dropserve:${name}_count\\{variant="${variant}",transport="http"\\} [1-9]`),
        );
      }
    }
    expect(text).toContain('dropserve:time_to_first_token_seconds_bucket{le="0.001",');
    for (const name of ['prompt_tokens_total', 'generation_tokens_total']) {
      expect(text).toMatch(new RegExp(`dropserve:${name}\\{variant="${PRUNED}",transport="http"\\} [1-9]`));
    }
    expect(text).toMatch(
      new RegExp(
        `dropserve:request_success_total\\{variant="${MODEL}",transport="http",finished_reason="length"\\}`,
      ),
    );
    for (const gauge of ['num_requests_running', 'num_requests_waiting', 'kv_cache_usage_perc']) {
      expect(text).toContain(`dropserve:${gauge}{variant="${PRUNED}"} 0`);
    }
    const samples = await scrapeMetrics(t.url);
    const fullBytes = sumOf(samples, 'dropserve:kv_cache_bytes_per_token', { variant: MODEL });
    const prunedBytes = sumOf(samples, 'dropserve:kv_cache_bytes_per_token', { variant: PRUNED });
    // 4 layers, 2 dropped: half the KV per token.
    expect(prunedBytes * 2).toBe(fullBytes);
  });
});

describe('overload', () => {
  let small: TestServer;
  let gate: GatedRunner;
  /** Every model run waits until the burst has been answered: who is admitted is then fixed. */
  let isOpen = false;
  beforeAll(async () => {
    small = await startTestServer({
      createEngine: async () => {
        let engine: CancelCountingEngine;
        ({ engine, gate } = await createGatedEngine(
          {
            model: testModel(),
            servedModelName: TEST_MODEL_NAME,
            maxQueue: 2,
            kvCacheBytes: 64 * 1024 * 1024,
          },
          () => !isOpen,
        ));
        return engine;
      },
    });
  });
  afterAll(async () => {
    isOpen = true;
    gate?.recheck();
    await small?.close();
  });

  it('--max-queue 2: a burst of 40 gets 429s with Retry-After, and every accepted request completes', async () => {
    // The first request is admitted and its prefill waits at the gate; two more wait in the queue;
    // the other 37 must be refused. Accepted requests answer only after their first token, so the
    // 37 answers that arrive while the gate is shut are the refusals.
    let answered = 0;
    const replies = Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const response = await fetch(`${small.url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            model: MODEL,
            prompt: `burst ${i}`,
            max_tokens: 24,
            ignore_eos: true,
            stream: i % 2 === 0,
          }),
        });
        answered++;
        const text = await response.text();
        return { status: response.status, retryAfter: response.headers.get('retry-after'), text };
      }),
    );
    await eventually(() => answered === 37, 60_000);
    isOpen = true;
    gate.recheck();
    const all = await replies;
    const rejected = all.filter((r) => r.status === 429);
    const accepted = all.filter((r) => r.status === 200);
    expect(rejected).toHaveLength(37);
    expect(accepted).toHaveLength(3);
    for (const r of rejected) {
      expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(JSON.parse(r.text).error.code).toBe('server_overloaded');
    }
    for (const r of accepted) {
      if (r.text.startsWith('data:')) {
        expect(r.text.trimEnd().endsWith('data: [DONE]')).toBe(true);
        expect(r.text).toContain('"finish_reason":"length"');
      } else {
        expect(JSON.parse(r.text).choices[0].finish_reason).toBe('length');
      }
    }
    const samples = await scrapeMetrics(small.url);
    expect(sumOf(samples, 'dropserve:request_rejected_total', { reason: 'server_overloaded' })).toBe(37);
  });
});
