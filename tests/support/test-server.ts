import OpenAI from 'openai';
import type { EngineClient } from '../../engine/client.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import { syntheticModel, TINY_SYNTHETIC_SHAPE } from '../../engine/model/synthetic.ts';
import type { VariantArg } from '../../server/config/variant-flag.ts';
import { type RunningServer, type StartServerOptions, startServer } from '../../server/start-server.ts';
import { STORIES_260K } from './shared-assets.ts';

/**
 * End-to-end test servers: the real engine (worker thread, as `dropserve serve` runs it) behind the
 * real HTTP server on 127.0.0.1, and the official `openai` client pointed at it. Every e2e test gets
 * its engine from here.
 */
/** The trained llama2.c checkpoint that ships in the repository (models/stories260K). */
export { STORIES_260K } from './shared-assets.ts';

/** The small synthetic model of the e2e suites: byte tokenizer, 4 layers, context 256. */
export const testModel = (): LoadedModel => syntheticModel(TINY_SYNTHETIC_SHAPE);

export const TEST_MODEL_NAME = 'tiny';

export interface TestServerOptions {
  /** Default: the synthetic test model; "stories260K" loads the trained llama2.c checkpoint. */
  model?: 'synthetic' | 'stories260K';
  variants?: VariantArg[];
  apiKey?: string;
  maxQueue?: number;
  kvCacheBytes?: number;
  maxBodyBytes?: number;
  shutdownGraceMs?: number;
  /** Run the engine on the test's thread instead of a worker. */
  inProcess?: boolean;
  /** Replace the engine factory (e.g. to hold loading back). */
  createEngine?: () => Promise<EngineClient>;
  onListening?: (info: { httpUrl: string }) => void;
  /** Also start gRPC, on this port (default: no gRPC). */
  grpcPort?: number;
}

/**
 * startServer options for suites that need more than startTestServer offers (experiments, shadow
 * scoring): loopback, any free port, no gRPC, no process metrics, 64 MiB of KV; `extra` overrides.
 */
export function e2eServerOptions(
  model: TestServerOptions['model'],
  extra: StartServerOptions = {},
): StartServerOptions {
  return {
    host: '127.0.0.1',
    port: 0,
    grpcPort: 0,
    collectProcessMetrics: false,
    ...(model === 'stories260K'
      ? { model: STORIES_260K }
      : { loadedModel: testModel(), servedModelName: TEST_MODEL_NAME }),
    kvCacheBytes: 64 * 1024 * 1024,
    ...extra,
  };
}

export interface TestServer {
  server: RunningServer;
  url: string;
  client: OpenAI;
  /** The served name of the full model. */
  modelName: string;
  close(graceMs?: number): Promise<void>;
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const isStories = options.model === 'stories260K';
  const server = await startServer({
    host: '127.0.0.1',
    port: 0,
    grpcPort: options.grpcPort ?? 0,
    collectProcessMetrics: false,
    ...(isStories ? { model: STORIES_260K } : { loadedModel: testModel(), servedModelName: TEST_MODEL_NAME }),
    variants: options.variants,
    apiKey: options.apiKey,
    maxQueue: options.maxQueue,
    kvCacheBytes: options.kvCacheBytes ?? 64 * 1024 * 1024,
    maxBodyBytes: options.maxBodyBytes,
    shutdownGraceMs: options.shutdownGraceMs ?? 2_000,
    inProcess: options.inProcess,
    createEngine: options.createEngine,
    onListening: options.onListening,
  });
  const client = new OpenAI({
    baseURL: `${server.httpUrl}/v1`,
    apiKey: options.apiKey ?? 'unused',
    maxRetries: 0,
    timeout: 60_000,
  });
  return {
    server,
    url: server.httpUrl,
    client,
    modelName: server.engine.model.name,
    close: (graceMs?: number) => server.close(graceMs ?? 0),
  };
}

/** One scrape of /metrics: samples by their full series text, e.g. 'dropserve:x{variant="m"}'. */
export async function scrapeMetrics(url: string): Promise<Map<string, number>> {
  return parseMetricsText(await (await fetch(`${url}/metrics`)).text());
}

/** Prometheus text exposition as samples by their full series text. */
export function parseMetricsText(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** Sum of every sample whose series starts with `name` and carries all the given labels. */
export function sumOf(
  samples: Map<string, number>,
  name: string,
  labels: Record<string, string> = {},
): number {
  let sum = 0;
  for (const [series, value] of samples) {
    const brace = series.indexOf('{');
    const seriesName = brace < 0 ? series : series.slice(0, brace);
    if (seriesName !== name) continue;
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) sum += value;
  }
  return sum;
}

/**
 * Polls until check() is true (engine counters settle a step after a response ends). Only for
 * states that are always reached: the limit, well inside vitest's 120 s, just turns a hang into a
 * failure, so it is generous enough for a busy 2-core machine.
 */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Runs start(port) on a port freePort() found free. Between the probe closing and start binding,
 * another process may take that port; then a new one is picked (a taken port is the only retry).
 */
export async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    try {
      return await start(port);
    } catch (error) {
      if (attempt >= 5 || !isAddressInUse(error)) throw error;
    }
  }
}

function isAddressInUse(error: unknown): boolean {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    if (
      (e as NodeJS.ErrnoException).code === 'EADDRINUSE' ||
      /EADDRINUSE|address already in use/i.test(e.message)
    ) {
      return true;
    }
  }
  return false;
}
