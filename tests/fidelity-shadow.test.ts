import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../engine/engine.ts';
import type { VariantView } from '../server/admin/variants/route.ts';
import type { CompleteResponseMessage } from '../server/grpc/generate-response.ts';
import { DROPSERVE_SERVICE, loadDropserveProtos } from '../server/grpc/load-protos.ts';
import { type RunningServer, type StartServerOptions, startServer } from '../server/start-server.ts';
import {
  e2eServerOptions,
  eventually,
  onFreePort,
  scrapeMetrics,
  sumOf,
  TEST_MODEL_NAME,
  testModel,
} from './support/test-server.ts';

/**
 * Shadow scoring wired into the server: sampled pruned-variant requests (HTTP and gRPC) are
 * re-scored by the full model after they complete, and the results show in GET /v1/variants and
 * in the Prometheus metrics; the full model is never sampled; the latency windows fill from the
 * same finished requests.
 */
async function variantsOf(server: RunningServer): Promise<VariantView[]> {
  return (await (await fetch(`${server.httpUrl}/v1/variants`)).json()) as VariantView[];
}

function grpcComplete(port: number, model: string): Promise<CompleteResponseMessage> {
  const m = (
    loadDropserveProtos()[DROPSERVE_SERVICE] as Record<string, protoLoader.MethodDefinition<object, object>>
  ).Complete!;
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise<CompleteResponseMessage>((resolve, reject) => {
    client.makeUnaryRequest(
      m.path,
      m.requestSerialize,
      (bytes: Buffer) => m.responseDeserialize(bytes) as CompleteResponseMessage,
      { model, prompt: 'The cat saw a big dog', max_tokens: 24, temperature: 0 },
      new grpc.Metadata(),
      (error, response) => (error ? reject(error) : resolve(response!)),
    );
  }).finally(() => client.close());
}

describe('shadow scoring end to end (stories260K, --shadow-rate 1)', () => {
  let server: RunningServer;
  let client: OpenAI;
  const PRUNED = 'stories260K:attn-2';
  beforeAll(async () => {
    server = await onFreePort((grpcPort) =>
      startServer(
        e2eServerOptions('stories260K', {
          grpcPort,
          variants: [{ name: 'attn-2', spec: 'attn:1,3' }],
          shadowRate: 1,
        }),
      ),
    );
    client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(() => server?.close(0));

  it('pruned traffic over HTTP (completions, chat, streaming) and gRPC shows fidelity samples and metrics', async () => {
    // A sample is dropped (as busy) when a request waits at the moment it finishes: each request is
    // sent only once the previous one's score is in, so every sample is scored whatever the timing.
    let views: VariantView[] = [];
    let sent = 0;
    const scored = async (): Promise<void> => {
      sent++;
      await eventually(async () => {
        views = await variantsOf(server);
        return views.find((v) => v.id === PRUNED)?.fidelity?.samples === sent;
      });
    };
    const prompts = ['Once upon a time', 'Lily and Tom went to the park.', 'One day, a little bird'];
    for (const prompt of prompts) {
      await client.completions.create({ model: PRUNED, prompt, max_tokens: 24, temperature: 0 });
      await scored();
    }
    await client.chat.completions.create({
      model: PRUNED,
      messages: [{ role: 'user', content: 'Tell me a story' }],
      max_tokens: 24,
      temperature: 0,
    });
    await scored();
    const stream = await client.completions.create({
      model: PRUNED,
      prompt: 'Once upon a time',
      max_tokens: 24,
      temperature: 0,
      stream: true,
    });
    for await (const _ of stream) {
      // drain
    }
    await scored();
    await grpcComplete(server.grpcPort!, PRUNED);
    await scored();
    // The full model's own traffic is never sampled.
    await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 24 });
    views = await variantsOf(server);

    const SAMPLED = 6;
    expect(sent).toBe(SAMPLED);
    const pruned = views.find((v) => v.id === PRUNED)!;
    const full = views.find((v) => v.id === 'stories260K')!;
    expect(full.fidelity).toBeNull();
    expect(pruned.fidelity!.positions).toBeGreaterThan(SAMPLED * 5);
    expect(pruned.fidelity!.agreement).toBeGreaterThan(0);
    expect(pruned.fidelity!.agreement).toBeLessThan(1);
    expect(pruned.fidelity!.kl_mean).toBeGreaterThan(0.01);
    expect(pruned.fidelity!.delta_nll_mean).toBeGreaterThan(0);

    const samples = await scrapeMetrics(server.httpUrl);
    const labels = { variant: PRUNED };
    expect(sumOf(samples, 'dropserve:shadow_requests_total', labels)).toBe(SAMPLED);
    expect(sumOf(samples, 'dropserve:shadow_requests_total', { variant: 'stories260K' })).toBe(0);
    expect(sumOf(samples, 'dropserve:fidelity_top1_agreement_count', labels)).toBe(SAMPLED);
    expect(sumOf(samples, 'dropserve:fidelity_kl_count', labels)).toBe(SAMPLED);
    expect(sumOf(samples, 'dropserve:fidelity_delta_nll_count', labels)).toBe(SAMPLED);
    // Per-request means average to within [0, 1] and match the position-weighted total's order.
    const meanAgreement = sumOf(samples, 'dropserve:fidelity_top1_agreement_sum', labels) / SAMPLED;
    expect(Math.abs(meanAgreement - pruned.fidelity!.agreement)).toBeLessThan(0.2);
    expect(sumOf(samples, 'dropserve:shadow_dropped_total', labels)).toBe(0);

    // Latency windows filled from the same finished requests: 6 pruned (HTTP and gRPC), 1 full.
    expect(pruned.latency.requests).toBe(SAMPLED);
    expect(full.latency.requests).toBe(1);
    for (const key of ['ttft_ms', 'itl_ms', 'tpot_ms', 'e2e_ms'] as const) {
      const p = pruned.latency[key]!;
      expect(p.p50, key).toBeGreaterThan(0);
      expect(p.p50 <= p.p90 && p.p90 <= p.p99, key).toBe(true);
    }
    expect(pruned.latency.output_tokens_per_s).toBeGreaterThan(0);
    expect(pruned.latency.window_s).toBe(300);
  });
});

describe('shadow scoring accounting under load (synthetic model)', () => {
  const PRUNED = `${TEST_MODEL_NAME}:attn-1`;
  const start = (extra: Partial<StartServerOptions>): Promise<RunningServer> =>
    startServer(e2eServerOptions('synthetic', { variants: [{ name: 'attn-1', spec: 'attn:1' }], ...extra }));

  it('every sampled request is either scored or dropped with a reason; none is lost', async () => {
    // Scores wait (off the engine loop, which goes on serving) until all the other samples have
    // been turned away: with one score allowed in flight, exactly 1 is scored and 23 dropped as busy.
    let openScoring!: () => void;
    const scoringOpen = new Promise<void>((resolve) => {
      openScoring = resolve;
    });
    const server = await start({
      shadowRate: 1,
      shadowMaxInFlight: 1,
      createEngine: async () => {
        const engine = await createEngine({
          model: testModel(),
          servedModelName: TEST_MODEL_NAME,
          variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
          kvCacheBytes: 64 * 1024 * 1024,
        });
        const score = engine.score.bind(engine);
        engine.score = async (request) => {
          await scoringOpen;
          return score(request);
        };
        return engine;
      },
    });
    try {
      const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
      await Promise.all(
        Array.from({ length: 24 }, () =>
          client.completions.create({
            model: PRUNED,
            prompt: 'Hello',
            max_tokens: 16,
            ignore_eos: true,
          } as OpenAI.CompletionCreateParamsNonStreaming),
        ),
      );
      const labels = { variant: PRUNED };
      await eventually(
        async () =>
          sumOf(await scrapeMetrics(server.httpUrl), 'dropserve:shadow_dropped_total', labels) === 23,
      );
      openScoring();
      let samples = new Map<string, number>();
      await eventually(async () => {
        samples = await scrapeMetrics(server.httpUrl);
        const scored = sumOf(samples, 'dropserve:fidelity_top1_agreement_count', labels);
        return scored + sumOf(samples, 'dropserve:shadow_dropped_total', labels) === 24;
      });
      expect(sumOf(samples, 'dropserve:shadow_requests_total', labels)).toBe(24);
      expect(sumOf(samples, 'dropserve:shadow_dropped_total', { ...labels, reason: 'busy' })).toBe(23);
      expect(sumOf(samples, 'dropserve:fidelity_top1_agreement_count', labels)).toBe(1);
      const view = (await variantsOf(server)).find((v) => v.id === PRUNED)!;
      expect(view.fidelity!.samples).toBe(sumOf(samples, 'dropserve:fidelity_top1_agreement_count', labels));
    } finally {
      openScoring();
      await server.close(0);
    }
  });

  it('with shadow scoring off (the default), nothing is sampled and fidelity stays null', async () => {
    const server = await start({});
    try {
      const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
      await client.completions.create({ model: PRUNED, prompt: 'Hello', max_tokens: 4 });
      const view = (await variantsOf(server)).find((v) => v.id === PRUNED)!;
      expect(view.fidelity).toBeNull();
      expect(view.latency.requests).toBe(1);
      expect(server.scorer).toBeUndefined();
      expect(sumOf(await scrapeMetrics(server.httpUrl), 'dropserve:shadow_requests_total')).toBe(0);
    } finally {
      await server.close(0);
    }
  });
});
