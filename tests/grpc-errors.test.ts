import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticModel, TINY_SYNTHETIC_SHAPE } from '../engine/model/synthetic.ts';
import type { CompleteResponseMessage, GenerateResponseMessage } from '../server/grpc/generate-response.ts';
import { ERROR_CODE_TRAILER, RETRY_AFTER_TRAILER } from '../server/grpc/status-table.ts';
import { collectStream } from '../server/grpc/testing/grpc-test-client.ts';
import {
  createTestEngine,
  isIdle,
  RecordingObserver,
  startTestGrpcServer,
  TEST_MODEL,
  type TestGrpcServer,
  waitFor,
} from '../server/grpc/testing/test-server.ts';
import {
  type CancelCountingEngine,
  createGatedEngine,
  type GatedRunner,
  lastPosition,
} from './support/gated-runner.ts';

const SERVICE = 'dropserve.v1.Dropserve';
/**
 * Still running when the client gives up, on any machine: while `holdLong` is set, the model run
 * that would reach position HOLD_AT waits at the gate until the test releases it, so the sequence
 * cannot reach max_tokens first (its last token lies at position 4 + 239 > HOLD_AT).
 */
const LONG = { prompt: 'Once', max_tokens: 240, temperature: 0, ignore_eos: true };
const HOLD_AT = 120;
let holdLong = false;

let engine: CancelCountingEngine;
let gate: GatedRunner;
let server: TestGrpcServer;
const observer = new RecordingObserver();

beforeAll(async () => {
  ({ engine, gate } = await createGatedEngine(
    {
      model: syntheticModel(TINY_SYNTHETIC_SHAPE),
      servedModelName: TEST_MODEL,
      variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
      kvCacheBytes: 64 * 1024 * 1024,
    },
    (input) => holdLong && lastPosition(input) >= HOLD_AT,
  ));
  server = await startTestGrpcServer(engine, { metrics: observer });
});

/** Holds LONG's sequence short of its end until `cancelled` cancellations have reached the engine. */
async function releaseAfterCancellations(cancelled: number): Promise<void> {
  await waitFor(() => engine.cancellations >= cancelled);
  holdLong = false;
  gate.recheck();
}
afterAll(async () => {
  holdLong = false;
  gate?.recheck();
  await server.close();
  await engine.close();
});

/** The status a unary Complete ends with. */
async function completeError(request: object, s: TestGrpcServer = server): Promise<grpc.ServiceError> {
  try {
    await s.client.unary<CompleteResponseMessage>(SERVICE, 'Complete', request);
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

describe('status codes', () => {
  it('INVALID_ARGUMENT for an out-of-range parameter, naming it', async () => {
    const e = await completeError({ prompt: 'x', temperature: -1 });
    expect(e.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(e.details).toMatch(/temperature/);
    expect(e.metadata.get(ERROR_CODE_TRAILER)).toEqual(['DS_INVALID_ARGUMENT']);
  });

  it('INVALID_ARGUMENT for context overflow, with the numbers', async () => {
    const tooLong = await completeError({ prompt: 'a'.repeat(299) });
    expect(tooLong.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(tooLong.details).toMatch(/prompt has 300 tokens; this model's context is 256/);
    expect(tooLong.metadata.get(ERROR_CODE_TRAILER)).toEqual(['DS_CONTEXT_OVERFLOW']);
    const withMaxTokens = await completeError({ prompt: 'a'.repeat(9), max_tokens: 250 });
    expect(withMaxTokens.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(withMaxTokens.details).toMatch(/10 tokens and max_tokens is 250.*256/);
  });

  it('NOT_FOUND for an unknown model, listing the served ones (streaming too)', async () => {
    const e = await completeError({ model: 'm:nope', prompt: 'x' });
    expect(e.code).toBe(grpc.status.NOT_FOUND);
    expect(e.details).toContain('available: m, m:attn-1');
    const stream = server.client.serverStream(SERVICE, 'Generate', { model: 'nope', prompt: 'x' });
    const { messages, error } = await collectStream(stream);
    expect(messages).toEqual([]);
    expect(error?.code).toBe(grpc.status.NOT_FOUND);
  });

  it('RESOURCE_EXHAUSTED with a retry-after trailer when the queue is full', async () => {
    const full = await createTestEngine({ maxQueue: 0 });
    const s = await startTestGrpcServer(full);
    try {
      const e = await completeError({ prompt: 'x' }, s);
      expect(e.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(e.metadata.get(RETRY_AFTER_TRAILER)).toEqual(['1']);
      expect(e.metadata.get(ERROR_CODE_TRAILER)).toEqual(['DS_OVERLOADED']);
    } finally {
      await s.close();
      await full.close();
    }
  });
});

describe('authentication', () => {
  let secured: TestGrpcServer;
  beforeAll(async () => {
    secured = await startTestGrpcServer(engine, { apiKey: 's3cret' });
  });
  afterAll(() => secured.close());

  it('UNAUTHENTICATED without the key or with a wrong one, on every Dropserve RPC', async () => {
    const c = secured.client;
    for (const options of [{}, { apiKey: 'wrong' }]) {
      for (const method of ['Complete', 'ListModels', 'Tokenize', 'Detokenize']) {
        const e = await c.unary(SERVICE, method, { prompt: 'x', text: 'x' }, options).catch((err) => err);
        expect([method, (e as grpc.ServiceError).code]).toEqual([method, grpc.status.UNAUTHENTICATED]);
      }
      const { error } = await collectStream(c.serverStream(SERVICE, 'Generate', { prompt: 'x' }, options));
      expect(error?.code).toBe(grpc.status.UNAUTHENTICATED);
    }
  });

  it('serves a request carrying the key', async () => {
    const answer = await secured.client.unary<CompleteResponseMessage>(
      SERVICE,
      'Complete',
      { prompt: 'x', max_tokens: 3, ignore_eos: true },
      { apiKey: 's3cret' },
    );
    expect(answer.usage?.completion_tokens).toBe(3);
  });
});

describe('cancellation and deadlines free the engine sequence', () => {
  it('a client cancel mid-stream aborts the sequence and frees its KV', async () => {
    const before = observer.requests.length;
    const cancelledBefore = engine.cancellations;
    holdLong = true;
    const stream = server.client.serverStream<GenerateResponseMessage>(SERVICE, 'Generate', LONG);
    const ended = collectStream(stream);
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    // Mid-stream: the sequence holds a slot and KV.
    const running = engine.variants().find((v) => v.id === TEST_MODEL)!;
    expect(running.requestsRunning).toBe(1);
    expect(running.kvCacheBytesUsed).toBeGreaterThan(0);
    stream.cancel();
    expect((await ended).error?.code).toBe(grpc.status.CANCELLED);
    await releaseAfterCancellations(cancelledBefore + 1);
    await waitFor(() => isIdle(engine));
    await waitFor(() => observer.requests.length > before);
    const finish = observer.requests.at(-1)!.finish;
    expect(finish.reason).toBe('abort');
    expect(finish.usage.completionTokens).toBeLessThan(LONG.max_tokens);
  });

  it('an expired deadline ends the stream with DEADLINE_EXCEEDED and aborts the sequence', async () => {
    const before = observer.requests.length;
    const cancelledBefore = engine.cancellations;
    holdLong = true;
    const stream = server.client.serverStream<GenerateResponseMessage>(SERVICE, 'Generate', LONG, {
      deadlineMs: 80,
    });
    const { error } = await collectStream(stream);
    expect(error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await releaseAfterCancellations(cancelledBefore + 1);
    await waitFor(() => isIdle(engine));
    await waitFor(() => observer.requests.length > before);
    const finish = observer.requests.at(-1)!.finish;
    expect(finish.reason).toBe('abort');
    expect(finish.usage.completionTokens).toBeLessThan(LONG.max_tokens);
  });

  it('a unary Complete past its deadline is aborted too', async () => {
    const before = observer.requests.length;
    const cancelledBefore = engine.cancellations;
    holdLong = true;
    const e = await server.client
      .unary(SERVICE, 'Complete', LONG, { deadlineMs: 80 })
      .catch((err: grpc.ServiceError) => err);
    expect((e as grpc.ServiceError).code).toBe(grpc.status.DEADLINE_EXCEEDED);
    await releaseAfterCancellations(cancelledBefore + 1);
    await waitFor(() => isIdle(engine));
    await waitFor(() => observer.requests.length > before);
    expect(observer.requests.at(-1)!.finish.reason).toBe('abort');
    // The server still answers afterwards.
    const answer = await server.client.unary<CompleteResponseMessage>(SERVICE, 'Complete', {
      prompt: 'x',
      max_tokens: 2,
    });
    expect(answer.finish_reason).not.toBe('');
  });
});
