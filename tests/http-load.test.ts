import http from 'node:http';
import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  eventually,
  scrapeMetrics,
  startTestServer,
  sumOf,
  TEST_MODEL_NAME,
  type TestServer,
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

async function engineIdle(): Promise<boolean> {
  const samples = await scrapeMetrics(t.url);
  return (
    sumOf(samples, 'dropserve:num_requests_running') === 0 &&
    sumOf(samples, 'dropserve:num_requests_waiting') === 0 &&
    sumOf(samples, 'dropserve:kv_cache_usage_perc') === 0
  );
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

  it('50 streams abandoned after their first tokens are cancelled: nothing left running, KV back to 0', async () => {
    const before = await scrapeMetrics(t.url);
    const abortsBefore = sumOf(before, 'dropserve:request_success_total', { finished_reason: 'abort' });
    await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const controller = new AbortController();
        const stream = await t.client.completions.create(
          {
            model: i % 2 === 0 ? MODEL : PRUNED,
            prompt: `abandon ${i}`,
            max_tokens: 200,
            ignore_eos: true,
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
      }),
    );
    await eventually(engineIdle, 10_000);
    const after = await scrapeMetrics(t.url);
    const abortsAfter = sumOf(after, 'dropserve:request_success_total', { finished_reason: 'abort' });
    expect(abortsAfter - abortsBefore).toBe(50);
    const variants = (await (await fetch(`${t.url}/v1/variants`)).json()) as {
      requests_running: number;
      kv_cache_usage_perc: number;
    }[];
    expect(variants.every((v) => v.requests_running === 0 && v.kv_cache_usage_perc === 0)).toBe(true);
  });

  it('a non-streaming client that disconnects cancels its sequence (the request signal fires on socket close)', async () => {
    const abortsBefore = sumOf(await scrapeMetrics(t.url), 'dropserve:request_success_total', {
      finished_reason: 'abort',
    });
    const body = JSON.stringify({ model: MODEL, prompt: 'long', max_tokens: 250, ignore_eos: true });
    const url = new URL(`${t.url}/v1/completions`);
    const request = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    request.on('error', () => {});
    request.end(body);
    // Wait until the sequence runs, then hang up without reading a byte.
    await eventually(async () => sumOf(await scrapeMetrics(t.url), 'dropserve:num_requests_running') > 0);
    request.destroy();
    await eventually(engineIdle);
    const samples = await scrapeMetrics(t.url);
    expect(
      sumOf(samples, 'dropserve:request_success_total', { finished_reason: 'abort' }) - abortsBefore,
    ).toBe(1);
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
  beforeAll(async () => {
    small = await startTestServer({ maxQueue: 2 });
  });
  afterAll(async () => {
    await small?.close();
  });

  it('--max-queue 2: a burst of 40 gets 429s with Retry-After, and every accepted request completes', async () => {
    const replies = await Promise.all(
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
        const text = await response.text();
        return { status: response.status, retryAfter: response.headers.get('retry-after'), text };
      }),
    );
    const rejected = replies.filter((r) => r.status === 429);
    const accepted = replies.filter((r) => r.status === 200);
    expect(rejected.length).toBeGreaterThan(0);
    expect(accepted.length).toBeGreaterThan(0);
    expect(rejected.length + accepted.length).toBe(40);
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
    expect(sumOf(samples, 'dropserve:request_rejected_total', { reason: 'server_overloaded' })).toBe(
      rejected.length,
    );
  });
});
