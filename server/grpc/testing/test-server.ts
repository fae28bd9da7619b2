import type { EngineClient } from '../../../engine/client.ts';
import { createEngine, type InProcessEngine } from '../../../engine/engine.ts';
import { syntheticModel, TINY_SYNTHETIC_SHAPE } from '../../../engine/model/synthetic.ts';
import { type GrpcServer, type GrpcServerOptions, startGrpcServer } from '../grpc-server.ts';
import type { ObservedGrpcRequest, RequestObserver } from '../request-observer.ts';
import { GrpcTestClient } from './grpc-test-client.ts';

/** Served name of the test model and its one pruned variant (attention of layer 1 dropped). */
export const TEST_MODEL = 'm';
export const TEST_VARIANT = 'm:attn-1';

/** The real engine on a small synthetic model (4 layers, context 256, byte tokenizer). */
export function createTestEngine(options: { maxQueue?: number } = {}): Promise<InProcessEngine> {
  return createEngine({
    model: syntheticModel(TINY_SYNTHETIC_SHAPE),
    servedModelName: TEST_MODEL,
    variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
    kvCacheBytes: 64 * 1024 * 1024,
    maxQueue: options.maxQueue,
  });
}

/** Records every observeRequest call, in place of server/metrics. */
export class RecordingObserver implements RequestObserver {
  readonly requests: ObservedGrpcRequest[] = [];
  observeRequest(request: ObservedGrpcRequest): void {
    this.requests.push(request);
  }
}

export interface TestGrpcServer {
  server: GrpcServer;
  client: GrpcTestClient;
  close(): Promise<void>;
}

/** A gRPC server on 127.0.0.1 (any free port) and a client connected to it. */
export async function startTestGrpcServer(
  engine: EngineClient,
  options: Omit<GrpcServerOptions, 'engine' | 'host' | 'port'> = {},
): Promise<TestGrpcServer> {
  const server = await startGrpcServer({ engine, host: '127.0.0.1', port: 0, ...options });
  const client = new GrpcTestClient(server.port);
  return {
    server,
    client,
    close: async () => {
      client.close();
      await server.close(100);
    },
  };
}

/** Polls until the condition holds; the generous limit only turns a hang into a failure. */
export async function waitFor(condition: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** No sequence running or waiting and no KV held, in any variant. */
export function isIdle(engine: EngineClient): boolean {
  return engine
    .variants()
    .every((v) => v.requestsRunning === 0 && v.requestsWaiting === 0 && v.kvCacheBytesUsed === 0);
}
