import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import type { EngineClient } from '../engine/client.ts';
import { createWorkerEngine } from '../engine/worker/worker-engine.ts';
import { type HealthCheckResponseMessage, ServingStatus } from '../server/grpc/health-service.ts';
import { GrpcTestClient } from '../server/grpc/testing/grpc-test-client.ts';
import { startServer } from '../server/start-server.ts';
import { closedAfterEach } from './support/close-after-each.ts';
import { type CancelCountingEngine, createGatedEngine, lastPosition } from './support/gated-runner.ts';
import {
  onFreePort,
  scrapeMetrics,
  startTestServer,
  sumOf,
  TEST_MODEL_NAME,
  type TestServer,
  testModel,
} from './support/test-server.ts';

/** Start-up (health while loading), auth, and graceful shutdown, each on its own real server. */
const servers = closedAfterEach();

async function start(options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const server = await startTestServer(options);
  servers.push(server);
  return server;
}

/** Reads an SSE response to its end; returns the data payloads. */
async function sseEvents(response: Response): Promise<string[]> {
  const text = await response.text();
  return text
    .split('\n\n')
    .filter((block) => block.startsWith('data: '))
    .map((block) => block.slice('data: '.length));
}

describe('start-up', () => {
  it('/health is 503 while the model loads and 200 once it serves; /v1 waits the same way', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let listening!: (url: string) => void;
    const urlKnown = new Promise<string>((resolve) => {
      listening = resolve;
    });
    const started = start({
      createEngine: async (): Promise<EngineClient> => {
        await gate;
        return createWorkerEngine({ model: testModel(), servedModelName: TEST_MODEL_NAME });
      },
      onListening: ({ httpUrl }) => listening(httpUrl),
    });
    const url = await urlKnown;
    const loading = await fetch(`${url}/health`);
    expect(loading.status).toBe(503);
    expect(((await loading.json()) as { error: { code: string } }).error.code).toBe('model_loading');
    expect(loading.headers.get('retry-after')).not.toBeNull();
    const early = await fetch(`${url}/v1/models`);
    expect(early.status).toBe(503);
    release();
    await started;
    const ready = await fetch(`${url}/health`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ok' });
  });

  it('rejects when the model cannot be loaded, and leaves no port open', async () => {
    let url = '';
    await expect(
      startServer({
        host: '127.0.0.1',
        port: 0,
        grpcPort: 0,
        model: '/nonexistent/model.bin',
        onListening: ({ httpUrl }) => {
          url = httpUrl;
        },
      }),
    ).rejects.toMatchObject({ code: 'DS_MODEL_LOAD' });
    expect(url).not.toBe('');
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });
});

describe('gRPC beside HTTP', () => {
  it('serves gRPC on --grpc-port with the same engine and metrics, and closes it on shutdown', async () => {
    let port = 0;
    const t = await onFreePort((grpcPort) => {
      port = grpcPort;
      return startTestServer({ grpcPort });
    });
    expect(t.server.grpcPort).toBe(port);
    const grpc = new GrpcTestClient(port);
    try {
      const health = await grpc.unary<HealthCheckResponseMessage>('grpc.health.v1.Health', 'Check', {
        service: '',
      });
      expect(health.status).toBe(ServingStatus.SERVING);
      const reply = await grpc.unary<{ usage: { completion_tokens: number } }>(
        'dropserve.v1.Dropserve',
        'Complete',
        {
          prompt: 'over grpc',
          max_tokens: 5,
          ignore_eos: true,
        },
      );
      expect(reply.usage.completion_tokens).toBe(5);
      const samples = await scrapeMetrics(t.url);
      expect(sumOf(samples, 'dropserve:generation_tokens_total', { transport: 'grpc' })).toBe(5);
    } finally {
      grpc.close();
    }
    await t.close();
    const probe = new GrpcTestClient(port);
    await expect(
      probe.unary('grpc.health.v1.Health', 'Check', { service: '' }, { deadlineMs: 1_000 }),
    ).rejects.toThrow();
    probe.close();
  });
});

describe('start-up failures', () => {
  it('a taken --grpc-port rejects start-up and closes HTTP and the engine again', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    const port = await new Promise<number>((resolve) =>
      blocker.listen(0, '127.0.0.1', () => resolve((blocker.address() as { port: number }).port)),
    );
    let url = '';
    try {
      await expect(
        startTestServer({
          grpcPort: port,
          onListening: ({ httpUrl }) => {
            url = httpUrl;
          },
        }),
      ).rejects.toThrow();
      await expect(fetch(`${url}/health`)).rejects.toThrow();
    } finally {
      blocker.close();
    }
  });
});

describe('auth', () => {
  it('--api-key guards /v1/* with a 401 in OpenAI shape; /health and /metrics stay open', async () => {
    const t = await start({ apiKey: 'sekret' });
    const missing = await fetch(`${t.url}/v1/models`);
    expect(missing.status).toBe(401);
    const body = (await missing.json()) as { error: { type: string; code: string } };
    expect(body.error.code).toBe('invalid_api_key');
    const wrong = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'guess', maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    const page = await t.client.models.list();
    expect(page.data.map((m) => m.id)).toEqual([TEST_MODEL_NAME]);
    expect((await fetch(`${t.url}/health`)).status).toBe(200);
    expect((await fetch(`${t.url}/metrics`)).status).toBe(200);
  });
});

describe('graceful shutdown', () => {
  const streamRequest = (url: string, maxTokens: number): Promise<Response> =>
    fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: TEST_MODEL_NAME,
        prompt: 'drain',
        max_tokens: maxTokens,
        ignore_eos: true,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });

  it('lets an in-flight stream finish within the grace period and refuses new work meanwhile', async () => {
    const t = await startTestServer();
    const response = await streamRequest(t.url, 120);
    expect(response.status).toBe(200);
    const events = sseEvents(response);
    // The grace only bounds a hang: the stream always finishes inside it.
    const closed = t.server.close(60_000);
    // Draining: no new work (503 on a kept-alive connection, or refused outright).
    const late = await fetch(`${t.url}/health`).then(
      (r) => r.status,
      () => 'refused',
    );
    expect([503, 'refused']).toContain(late);
    const data = await events;
    expect(data.at(-1)).toBe('[DONE]');
    const usage = JSON.parse(data.at(-2)!).usage;
    expect(usage.completion_tokens).toBe(120);
    await closed;
  });

  it('cancels streams still running when the grace period ends, telling the client why', async () => {
    // However fast the machine, the stream cannot end inside the 20 ms grace: the model run that
    // reaches position 120 (of the 250 tokens asked) waits at a gate until shutdown has cancelled it.
    let engine: CancelCountingEngine | undefined;
    const t = await startTestServer({
      createEngine: async () => {
        ({ engine } = await createGatedEngine(
          { model: testModel(), servedModelName: TEST_MODEL_NAME, kvCacheBytes: 64 * 1024 * 1024 },
          (input) => lastPosition(input) >= 120 && engine?.cancellations === 0,
        ));
        return engine;
      },
    });
    const response = await streamRequest(t.url, 250);
    expect(response.status).toBe(200);
    const events = sseEvents(response);
    await t.server.close(20);
    const data = await events;
    expect(data.at(-1)).toBe('[DONE]');
    const error = JSON.parse(data.at(-2)!);
    expect(error.error.code).toBe('shutting_down');
    const generated = data.filter((d) => d.includes('"text"')).length;
    expect(generated).toBeLessThan(250);
    expect(engine?.cancellations).toBe(1);
  });
});
