import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EngineClient } from '../engine/client.ts';
import type { InProcessEngine } from '../engine/engine.ts';
import { type HealthCheckResponseMessage, ServingStatus } from '../server/grpc/health-service.ts';
import { GrpcTestClient, loadReflectionProtos } from '../server/grpc/testing/grpc-test-client.ts';
import {
  createTestEngine,
  startTestGrpcServer,
  type TestGrpcServer,
  waitFor,
} from '../server/grpc/testing/test-server.ts';

const HEALTH = 'grpc.health.v1.Health';

/** The real engine, with readiness under the test's control (a model still loading, then loaded). */
function withReadiness(engine: EngineClient, isReady: () => boolean): EngineClient {
  return {
    generate: (request, signal) => engine.generate(request, signal),
    score: (request, signal) => engine.score(request, signal),
    variants: () => engine.variants(),
    model: engine.model,
    tokenizer: engine.tokenizer,
    isReady,
    close: (graceMs) => engine.close(graceMs),
  };
}

let engine: InProcessEngine;
let isLoaded = false;
let server: TestGrpcServer;

beforeAll(async () => {
  engine = await createTestEngine();
  // An API key is set: health and reflection must stay open anyway.
  server = await startTestGrpcServer(
    withReadiness(engine, () => isLoaded),
    { apiKey: 's3cret' },
  );
});
afterAll(async () => {
  await server.close();
  await engine.close();
});

const check = (service: string): Promise<HealthCheckResponseMessage> =>
  server.client.unary<HealthCheckResponseMessage>(HEALTH, 'Check', { service });

describe('grpc.health.v1.Health', () => {
  it('is NOT_SERVING until the engine is ready, then SERVING; Watch sees the change', async () => {
    isLoaded = false;
    expect(await check('')).toEqual({ status: ServingStatus.NOT_SERVING });
    expect(await check('dropserve.v1.Dropserve')).toEqual({ status: ServingStatus.NOT_SERVING });

    const watch = server.client.serverStream<HealthCheckResponseMessage>(HEALTH, 'Watch', { service: '' });
    const seen: number[] = [];
    watch.on('data', (m: HealthCheckResponseMessage) => seen.push(m.status));
    watch.on('error', () => undefined); // cancelled below
    await waitFor(() => seen.length === 1);
    isLoaded = true;
    await waitFor(() => seen.length === 2);
    expect(seen).toEqual([ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
    watch.cancel();

    expect(await check('')).toEqual({ status: ServingStatus.SERVING });
    expect(await check('dropserve.v1.Dropserve')).toEqual({ status: ServingStatus.SERVING });
  });

  it('Check answers NOT_FOUND for an unknown service; Watch reports SERVICE_UNKNOWN', async () => {
    const e = await check('no.such.Service').catch((err: grpc.ServiceError) => err);
    expect((e as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    const watch = server.client.serverStream<HealthCheckResponseMessage>(HEALTH, 'Watch', {
      service: 'no.such.Service',
    });
    const first = await new Promise<HealthCheckResponseMessage>((resolve) => watch.once('data', resolve));
    expect(first.status).toBe(ServingStatus.SERVICE_UNKNOWN);
    watch.on('error', () => undefined);
    watch.cancel();
  });

  it('turns NOT_SERVING for watchers and ends their calls when the server closes', async () => {
    isLoaded = true;
    const closing = await startTestGrpcServer(withReadiness(engine, () => true));
    const watch = closing.client.serverStream<HealthCheckResponseMessage>(HEALTH, 'Watch', { service: '' });
    const seen: number[] = [];
    watch.on('data', (m: HealthCheckResponseMessage) => seen.push(m.status));
    const ended = new Promise<grpc.StatusObject>((resolve) => watch.on('status', resolve));
    await waitFor(() => seen.length === 1);
    const closed = closing.server.close(5_000);
    expect((await ended).code).toBe(grpc.status.OK);
    expect(seen).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    await closed;
    closing.client.close();
  });
});

describe('server reflection', () => {
  interface ReflectionResponse {
    list_services_response?: { service: { name: string }[] } | null;
    file_descriptor_response?: { file_descriptor_proto: Buffer[] } | null;
    error_response?: { error_code: number; error_message: string } | null;
  }

  /** Sends reflection requests one by one on a single ServerReflectionInfo stream. */
  async function reflect(requests: object[]): Promise<ReflectionResponse[]> {
    const client = new GrpcTestClient(server.server.port, loadReflectionProtos());
    const call = client.bidiStream<ReflectionResponse>(
      'grpc.reflection.v1.ServerReflection',
      'ServerReflectionInfo',
    );
    const responses: ReflectionResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on('data', (r: ReflectionResponse) => responses.push(r));
      call.on('end', resolve);
      call.on('error', reject);
    });
    for (const r of requests) call.write(r);
    call.end();
    await done;
    client.close();
    return responses;
  }

  it('lists dropserve.v1.Dropserve and the health service, and serves their descriptors (no key needed)', async () => {
    const [list, file] = await reflect([
      { list_services: '*' },
      { file_containing_symbol: 'dropserve.v1.Dropserve' },
    ]);
    const names = list!.list_services_response!.service.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['dropserve.v1.Dropserve', 'grpc.health.v1.Health']));
    const descriptors = file!.file_descriptor_response!.file_descriptor_proto;
    // The serialized FileDescriptorProto names the package, the service, its methods and messages.
    const text = Buffer.concat(descriptors).toString('latin1');
    for (const name of [
      'dropserve.v1',
      'Dropserve',
      'Generate',
      'Complete',
      'GenerateRequest',
      'prompt_token_ids',
    ]) {
      expect(text).toContain(name);
    }
  });
});
