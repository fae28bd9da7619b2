import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { GenerateEvent, GenerateRequest } from '../engine/client.ts';
import { DEFAULT_SAMPLING } from '../engine/client.ts';
import { createEngine } from '../engine/engine.ts';
import { createWorkerEngine } from '../engine/worker/worker-engine.ts';
import { GrpcTestClient } from '../server/grpc/testing/grpc-test-client.ts';
import { closedAfterEach } from './support/close-after-each.ts';
import { aborted, GatedEngine } from './support/gated-engine.ts';
import {
  eventually,
  onFreePort,
  parseMetricsText,
  scrapeMetrics,
  startTestServer,
  sumOf,
  TEST_MODEL_NAME,
  type TestServer,
  testModel,
} from './support/test-server.ts';

/**
 * A client that leaves before its request reaches the engine is still counted, once, as
 * `dropserve:request_success_total{finished_reason="abort"}` (as vLLM counts aborted requests), and
 * in no other counter. The "before" is a state the test holds (a gate in front of the real engine,
 * a body the server is provably still waiting for), never a moment it has to hit.
 */
const servers = closedAfterEach();

async function gatedServer(grpcPort?: number): Promise<{ t: TestServer; gated: GatedEngine }> {
  const gated = new GatedEngine(
    await createWorkerEngine({ model: testModel(), servedModelName: TEST_MODEL_NAME }),
  );
  const t = await startTestServer({ createEngine: async () => gated, grpcPort });
  servers.push(t);
  return { t, gated };
}

interface Outcomes {
  aborts: number;
  otherFinishes: number;
  rejected: number;
}

async function outcomes(url: string, transport: 'http' | 'grpc', variant?: string): Promise<Outcomes> {
  const samples = await scrapeMetrics(url);
  const labels = { transport, ...(variant === undefined ? {} : { variant }) };
  const aborts = sumOf(samples, 'dropserve:request_success_total', { ...labels, finished_reason: 'abort' });
  return {
    aborts,
    otherFinishes: sumOf(samples, 'dropserve:request_success_total', labels) - aborts,
    rejected: sumOf(samples, 'dropserve:request_rejected_total', { transport }),
  };
}

/** Waits until the abort count moves, then checks it moved by exactly one and nothing else did. */
async function expectOneAbort(url: string, transport: 'http' | 'grpc', before: Outcomes, variant?: string) {
  // The bound only turns a lost abort into a failure instead of a hang; counting takes milliseconds.
  await eventually(async () => (await outcomes(url, transport, variant)).aborts > before.aborts, 60_000);
  expect(await outcomes(url, transport, variant)).toEqual({ ...before, aborts: before.aborts + 1 });
}

describe('HTTP: aborts before admission to the engine', () => {
  it.each([
    ['a completion', '/v1/completions', { prompt: 'left early' }],
    ['a streamed completion', '/v1/completions', { prompt: 'left early', stream: true }],
    ['a chat completion', '/v1/chat/completions', { messages: [{ role: 'user', content: 'left early' }] }],
    [
      'a streamed chat completion',
      '/v1/chat/completions',
      { messages: [{ role: 'user', content: 'left early' }], stream: true },
    ],
  ])(
    '%s whose client leaves while it waits in front of the engine counts once as an abort',
    async (_name, path, body) => {
      const { t, gated } = await gatedServer();
      const before = await outcomes(t.url, 'http', TEST_MODEL_NAME);
      const client = new AbortController();
      const request = fetch(`${t.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: TEST_MODEL_NAME, max_tokens: 8, ...body }),
        signal: client.signal,
      }).catch((e: unknown) => e);
      const [held] = await gated.held(1);
      client.abort();
      await aborted(held!.signal);
      // The engine now sees a request whose signal has already fired.
      gated.open();
      await expectOneAbort(t.url, 'http', before, TEST_MODEL_NAME);
      expect(await request).toBeInstanceOf(Error);
    },
  );

  it('a client that hangs up in the middle of its body counts once as an abort, not as a bad request', async () => {
    const { t } = await gatedServer();
    // Its body never arrived, so its model is not known: counted under variant="unknown".
    const before = await outcomes(t.url, 'http', 'unknown');
    const { port } = new URL(t.url);
    const socket = connect(Number(port), '127.0.0.1');
    socket.on('error', () => {});
    // "100 Continue" means the server has the request and is waiting for its body.
    const continued = new Promise<void>((resolve) => {
      socket.on('data', (chunk: Buffer) => {
        if (chunk.toString('latin1').startsWith('HTTP/1.1 100')) resolve();
      });
    });
    socket.write(
      'POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
        'Content-Length: 200\r\nExpect: 100-continue\r\n\r\n',
    );
    await continued;
    socket.write('{"model": "tiny", "prom');
    socket.destroy();
    await expectOneAbort(t.url, 'http', before, 'unknown');
  });
});

describe('HTTP: requests cancelled by the shutdown grace', () => {
  it('a request cancelled before it reached the engine answers 503 and counts once, as an abort', async () => {
    const { t, gated } = await gatedServer();
    const request = fetch(`${t.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: TEST_MODEL_NAME, prompt: 'cut short', max_tokens: 8 }),
    });
    const [held] = await gated.held(1);
    const closed = t.server.close(0);
    await aborted(held!.signal);
    gated.open();
    const response = await request;
    expect(response.status).toBe(503);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('shutting_down');
    await closed;
    // The listener is closed now: read the registry the /metrics route renders.
    const samples = parseMetricsText((await t.server.metrics.render()).body);
    expect(sumOf(samples, 'dropserve:request_success_total', { finished_reason: 'abort' })).toBe(1);
    expect(sumOf(samples, 'dropserve:request_success_total')).toBe(1);
    expect(sumOf(samples, 'dropserve:request_rejected_total')).toBe(0);
  });
});

describe('gRPC: aborts before admission to the engine', () => {
  it('a Generate call cancelled while it waits in front of the engine counts once as an abort', async () => {
    const { t, gated } = await onFreePort(gatedServer);
    const grpc = new GrpcTestClient(t.server.grpcPort!);
    try {
      const before = await outcomes(t.url, 'grpc', TEST_MODEL_NAME);
      const call = grpc.serverStream('dropserve.v1.Dropserve', 'Generate', {
        model: TEST_MODEL_NAME,
        prompt: 'left early',
        max_tokens: 8,
      });
      call.on('error', () => {});
      call.on('data', () => {});
      const [held] = await gated.held(1);
      call.cancel();
      await aborted(held!.signal);
      gated.open();
      await expectOneAbort(t.url, 'grpc', before, TEST_MODEL_NAME);
    } finally {
      grpc.close();
    }
  });
});

describe('gRPC: calls refused before the engine', () => {
  it('an unknown model counts once as rejected (model_not_found), as over HTTP', async () => {
    const { t } = await onFreePort(gatedServer);
    const grpc = new GrpcTestClient(t.server.grpcPort!);
    try {
      const before = await outcomes(t.url, 'grpc');
      await expect(
        grpc.unary('dropserve.v1.Dropserve', 'Complete', {
          model: 'no-such-model',
          prompt: 'x',
          max_tokens: 2,
        }),
      ).rejects.toThrow();
      const after = await outcomes(t.url, 'grpc');
      expect(after).toEqual({ ...before, rejected: before.rejected + 1 });
      const samples = await scrapeMetrics(t.url);
      expect(
        sumOf(samples, 'dropserve:request_rejected_total', { transport: 'grpc', reason: 'model_not_found' }),
      ).toBe(1);
    } finally {
      grpc.close();
    }
  });
});

describe('engine contract: generate() with a signal that has already fired', () => {
  const request = (requestId: string): GenerateRequest => ({
    requestId,
    variant: TEST_MODEL_NAME,
    promptTokenIds: [1, 2, 3],
    maxTokens: 4,
    sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
    ignoreEos: true,
  });

  async function collect(events: AsyncIterable<GenerateEvent>): Promise<GenerateEvent[]> {
    const out: GenerateEvent[] = [];
    for await (const event of events) out.push(event);
    return out;
  }

  it.each([
    ['in-process', () => createEngine({ model: testModel(), servedModelName: TEST_MODEL_NAME })],
    ['worker', () => createWorkerEngine({ model: testModel(), servedModelName: TEST_MODEL_NAME })],
  ])('%s: ends at once with one finish of reason abort, and the engine serves on', async (_name, make) => {
    const engine = await make();
    try {
      const events = await collect(engine.generate(request('gone'), AbortSignal.abort()));
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({
        type: 'finish',
        reason: 'abort',
        variant: TEST_MODEL_NAME,
        usage: { promptTokens: 3, completionTokens: 0 },
      });
      const served = await collect(engine.generate(request('next')));
      expect(served.filter((e) => e.type === 'token')).toHaveLength(4);
      expect(served.at(-1)).toMatchObject({ type: 'finish', reason: 'length' });
    } finally {
      await engine.close();
    }
  });
});
