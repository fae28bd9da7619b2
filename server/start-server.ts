import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { EngineClient, KvAdmission, KvCachePlacement } from '../engine/client.ts';
import type { Device } from '../engine/device.ts';
import { DropserveError } from '../engine/errors.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import type { WeightOptions } from '../engine/quant/quantize-weights.ts';
import type { PrefixReuseOptions } from '../engine/runtime/engine-core.ts';
import { resolveVariantArgs, type VariantArg } from './config/variant-flag.ts';
import { checkExperimentName } from './experiments/experiment-body.ts';
import type { ExperimentArm, ExperimentRouter } from './experiments/experiment-router.ts';
import { ExperimentStatistics } from './experiments/experiment-statistics.ts';
import { ExperimentsFileSource } from './experiments/experiments-file-source.ts';
import type { Guardrail } from './experiments/guardrails.ts';
import { ShadowSamplingEngine } from './fidelity/shadow-sampling.ts';
import { ShadowScorer } from './fidelity/shadow-scorer.ts';
import {
  createHttpApp,
  DEFAULT_MAX_BODY_BYTES,
  experimentRouterFor,
  feedExperimentStatistics,
} from './http/app.ts';
import { installEdgeErrorHandlers } from './http/edge-errors.ts';
import { ServerLifecycle } from './lifecycle.ts';
import { type Logger, silentLogger } from './logger.ts';
import { ServerMetrics } from './metrics/metrics.ts';

export const DEFAULT_HTTP_PORT = 8000;
export const DEFAULT_GRPC_PORT = 50051;
export const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;
/** After the drain, how long finished responses get to reach slow readers before sockets are cut. */
const RESPONSE_FLUSH_MS = 5_000;
/**
 * One shadow score queued or running at a time: a score is one uninterruptible forward pass over
 * prompt + completion, and a new interactive request that arrives meanwhile waits for it. Under
 * load, extra samples are dropped (counted as busy) rather than queued. bench/shadow.ts measures it.
 */
export const DEFAULT_SHADOW_MAX_IN_FLIGHT = 1;

export interface StartServerOptions {
  /** Interface to bind (default 0.0.0.0, every interface, as vLLM). */
  host?: string;
  /** HTTP port (default 8000; 0 = any free port). */
  port?: number;
  /** gRPC port (default 50051; 0 = no gRPC server). */
  grpcPort?: number;
  /** Require `Authorization: Bearer <apiKey>` on /v1/* and on gRPC. */
  apiKey?: string;
  maxBodyBytes?: number;
  /** Grace for close() without an argument. */
  shutdownGraceMs?: number;
  /** `--weights`, `--quant-block`, `--quantize-lm-head` (default fp32). */
  weights?: WeightOptions;
  logger?: Logger;
  /** Export Node process metrics on /metrics (default true). */
  collectProcessMetrics?: boolean;
  /**
   * Shutdown asked for before start-up is over (a signal while the model loads): the model load
   * finishes or fails, nothing more is started, everything started is closed, and startServer
   * rejects with DS_SHUTTING_DOWN. Once startServer has resolved, use close().
   */
  signal?: AbortSignal;
  /** Called once HTTP listens, before the model is loaded (/health answers 503 meanwhile). */
  onListening?: (info: { httpUrl: string }) => void;

  /** Makes the engine; by default the model below is loaded and run in a worker thread. */
  createEngine?: () => Promise<EngineClient>;
  /** Path, HF id or `synthetic[:SEED]`; absent = the built-in default (stories260K in models/). */
  model?: string;
  tokenizer?: string;
  /** An already loaded model (tests, embedding); takes the place of `model`/`tokenizer`. */
  loadedModel?: LoadedModel;
  servedModelName?: string;
  variants?: VariantArg[];
  kvCacheBytes?: number;
  /** `--kv-block-tokens`: tokens per KV block (default 16). */
  kvBlockTokens?: number;
  /** `--kv-admission` (default on-demand). */
  kvAdmission?: KvAdmission;
  /** `--kv-watermark`: share of the KV budget kept free at admission (default 0.01). */
  kvWatermark?: number;
  /** `--kv-placement host|device` (default: device on WebGPU, host otherwise). */
  kvPlacement?: KvCachePlacement;
  /** `--kv-dtype fp32|fp16` (fp16 only with device placement). */
  kvDtype?: 'fp32' | 'fp16';
  maxQueue?: number;
  device?: Device;
  threads?: number;
  /** Reuse a running request's KV for a shared prompt prefix (--prefix-reuse; default off). */
  prefixReuse?: PrefixReuseOptions;
  /** Run the engine on this thread instead of a worker (tools, tests; model runs block the loop). */
  inProcess?: boolean;
  /** A/B experiments served from the start (--experiment); more can be added at runtime. */
  experiments?: { name: string; arms: ExperimentArm[]; control?: string }[];
  /**
   * Bars every non-control experiment arm must clear (--experiment-guardrail); an arm whose
   * confidence sequence falls past one is drained: its users go to the control arm.
   */
  experimentGuardrails?: Guardrail[];
  /**
   * --experiments-file: experiments shared by every replica (JSON or YAML), re-read on change; an
   * invalid edit is rejected and the configuration in force stays.
   */
  experimentsFile?: string;
  /** How often the experiments file is re-read besides watch events (default 2000 ms). */
  experimentsFilePollMs?: number;
  /** Share (0..1) of finished pruned-variant requests re-scored by the full model (default 0: off). */
  shadowRate?: number;
  /** Shadow scores in flight beyond this are dropped and counted (default 1). */
  shadowMaxInFlight?: number;
}

export interface RunningServer {
  /** A URL clients on this host can reach (0.0.0.0 is shown as 127.0.0.1). */
  httpUrl: string;
  grpcPort?: number;
  engine: EngineClient;
  metrics: ServerMetrics;
  experiments: ExperimentRouter;
  /** Per-experiment statistics, verdicts and guardrails (GET /v1/experiments/{name}/report). */
  experimentStatistics: ExperimentStatistics;
  /** Present with --experiments-file. */
  experimentsFile?: ExperimentsFileSource;
  /** Present when shadowRate > 0. */
  scorer?: ShadowScorer;
  /**
   * Drains: new requests (also on kept-alive connections) get 503 with `Connection: close` and
   * /health says 503 while in-flight requests get graceMs to finish; the rest are cancelled. Then the
   * listener and the engine close.
   */
  close(graceMs?: number): Promise<void>;
}

/**
 * Wires the process: HTTP listens first (so /health says 503 while the model loads), then the engine
 * is made, then gRPC starts. Resolves once everything serves; rejects (with the HTTP server closed)
 * when the engine cannot be made.
 */
export async function startServer(options: StartServerOptions = {}): Promise<RunningServer> {
  const logger = options.logger ?? silentLogger();
  const host = options.host ?? '0.0.0.0';
  const lifecycle = new ServerLifecycle();
  const metrics = new ServerMetrics(() => lifecycle.engine, {
    collectProcessMetrics: options.collectProcessMetrics,
  });
  const shadowRate = options.shadowRate ?? 0;
  if (!(shadowRate >= 0 && shadowRate <= 1))
    throw new RangeError(`shadowRate must be in [0, 1], got ${shadowRate}`);
  const experiments = experimentRouterFor(lifecycle, metrics);
  const experimentStatistics = new ExperimentStatistics({
    router: experiments,
    guardrails: options.experimentGuardrails,
    onTrip: (experiment, trip) => {
      metrics.observeGuardrailTripped(experiment, trip.variant);
      logger.warn(
        { experiment, arm: trip.variant, metric: trip.metric, threshold: trip.threshold, atN: trip.at_n },
        `experiment ${experiment}: guardrail tripped, ${trip.variant} gets no new traffic (${trip.reason})`,
      );
    },
  });
  feedExperimentStatistics(metrics, experimentStatistics);
  let scorer: ShadowScorer | undefined;
  let experimentsFile: ExperimentsFileSource | undefined;
  const app = createHttpApp({
    lifecycle,
    metrics,
    logger,
    apiKey: options.apiKey,
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    experiments,
    experimentStatistics,
    experimentsFileStatus: () => experimentsFile?.status(),
    fidelity: (variant) => scorer?.fidelity(variant),
  });
  const cancelled = (): DropserveError =>
    new DropserveError('DS_SHUTTING_DOWN', 'start-up cancelled: shutdown was asked for while loading');
  options.signal?.throwIfAborted();
  const { server, port } = await listen(app.fetch, host, options.port ?? DEFAULT_HTTP_PORT);
  installEdgeErrorHandlers(server);
  const onStopWhileLoading = (): void => lifecycle.cancelLoading();
  options.signal?.addEventListener('abort', onStopWhileLoading, { once: true });
  if (options.signal?.aborted) onStopWhileLoading();
  const httpUrl = `http://${reachableHost(host)}:${port}`;
  logger.info({ url: httpUrl, host, port }, 'http server listening; loading the model');
  options.onListening?.({ httpUrl });

  let engine: EngineClient;
  try {
    engine = await (options.createEngine ?? (() => createDefaultEngine(options, logger)))();
  } catch (error) {
    lifecycle.setLoadFailed(error);
    await closeHttp(server);
    throw options.signal?.aborted ? cancelled() : error;
  } finally {
    options.signal?.removeEventListener('abort', onStopWhileLoading);
  }
  if (options.signal?.aborted) {
    logger.info('shutdown asked for while loading: closing the engine again');
    lifecycle.markClosed();
    await engine.close(0);
    await closeHttp(server);
    throw cancelled();
  }
  if (shadowRate > 0) {
    const maxInFlight = options.shadowMaxInFlight ?? DEFAULT_SHADOW_MAX_IN_FLIGHT;
    scorer = new ShadowScorer({
      engine,
      rate: shadowRate,
      maxInFlight,
      onScored: (variant, result) => {
        metrics.observeFidelity(variant, result);
        experimentStatistics.observeFidelity(variant, result);
      },
      onDropped: (variant, reason) => metrics.observeShadowDropped(variant, reason),
    });
    // The transports get the sampling engine: it records and submits the sampled requests.
    engine = new ShadowSamplingEngine(engine, scorer, {
      onSampled: (variant) => metrics.observeShadowRequest(variant),
      onSkipped: (variant, reason) => metrics.observeShadowDropped(variant, reason),
    });
    logger.info({ shadowRate, maxInFlight }, 'shadow scoring on');
  }
  lifecycle.setEngine(engine);
  logEngine(logger, engine);
  try {
    for (const { name, arms, control } of options.experiments ?? []) {
      const experiment = experiments.set(checkExperimentName(name), arms, { control, scope: 'replica' });
      logger.info(
        { experiment: name, weights: Object.fromEntries(experiment.arms.map((a) => [a.variant, a.weight])) },
        `experiment ${name}: ${experiment.arms.map((a) => `${a.variant}:${a.weight}`).join(', ')}`,
      );
    }
    if (options.experimentsFile !== undefined) {
      const source = new ExperimentsFileSource({
        path: options.experimentsFile,
        router: experiments,
        logger,
        registry: metrics.registry,
        pollIntervalMs: options.experimentsFilePollMs,
      });
      await source.load();
      source.start();
      experimentsFile = source;
      const { version, experiments: names } = source.status();
      logger.info(
        { path: source.path, version, experiments: names },
        `experiments file ${source.path}: version ${version}`,
      );
    }
  } catch (error) {
    // A bad --experiment (unknown variant, taken name): leave nothing running behind the rejection.
    lifecycle.markClosed();
    await engine.close(0);
    await closeHttp(server);
    throw error;
  }

  let grpc: { port: number; close(graceMs?: number): Promise<void> } | undefined;
  const grpcPort = options.grpcPort ?? DEFAULT_GRPC_PORT;
  if (grpcPort !== 0) {
    try {
      grpc = await startGrpc({
        engine,
        port: grpcPort,
        host,
        apiKey: options.apiKey,
        metrics,
        logger,
        experiments,
      });
    } catch (error) {
      // E.g. the port is taken: leave nothing running behind the rejection.
      lifecycle.markClosed();
      await engine.close(0);
      await closeHttp(server);
      throw error;
    }
  }

  let closing: Promise<void> | undefined;
  const close = (graceMs = options.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS): Promise<void> => {
    closing ??= (async () => {
      experimentsFile?.close();
      logger.info({ graceMs, inFlight: lifecycle.inFlight }, 'shutting down: draining in-flight requests');
      // The listener stays open while draining: requests (kept-alive or new) get a 503 with
      // `Connection: close` from the drain gate instead of a refused or reset connection.
      const [isDrained] = await Promise.all([lifecycle.drain(graceMs), grpc?.close(graceMs)]);
      if (!isDrained) {
        logger.warn({ inFlight: lifecycle.inFlight }, 'grace period over: cancelling in-flight requests');
        await lifecycle.waitIdle(2_000);
      }
      // Idle keep-alive connections close now; busy ones (a stream's last bytes still going out)
      // as soon as their response is done: Node would otherwise keep them for keepAliveTimeout.
      server.keepAliveTimeout = 1;
      const httpClosed = closeHttp(server);
      server.closeIdleConnections();
      await engine.close(0);
      lifecycle.markClosed();
      // A client that stopped reading must not hold the process open.
      const isFlushed = await Promise.race([
        httpClosed.then(() => true),
        new Promise<boolean>((resolve) => setTimeout(resolve, RESPONSE_FLUSH_MS, false).unref()),
      ]);
      if (!isFlushed) server.closeAllConnections();
      await httpClosed;
      logger.info('shut down');
    })();
    return closing;
  };
  return {
    httpUrl,
    grpcPort: grpc?.port,
    engine,
    metrics,
    experiments,
    experimentStatistics,
    experimentsFile,
    scorer,
    close,
  };
}

/** serve() without a createServer option makes a plain node:http server. */
type NodeServer = Server;

function listen(
  fetch: (request: Request) => Response | Promise<Response>,
  host: string,
  port: number,
): Promise<{ server: NodeServer; port: number }> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname: host, port }, (info: AddressInfo) =>
      resolve({ server: server as unknown as NodeServer, port: info.port }),
    );
    server.once('error', reject);
  });
}

function closeHttp(server: NodeServer): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function reachableHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

async function createDefaultEngine(options: StartServerOptions, logger: Logger): Promise<EngineClient> {
  // Loaded here, not at the top: tests that bring their own engine never load onnxruntime.
  const { loadModel } = await import('../engine/model/load-model.ts');
  const { withWeightOptions } = await import('../engine/quant/weight-flags.ts');
  const loaded =
    options.loadedModel ??
    (await loadModel({
      model: options.model,
      tokenizer: options.tokenizer,
      onProgress: (message) => logger.info(message),
    }));
  const model = options.weights ? withWeightOptions(loaded, options.weights) : loaded;
  if (options.weights && options.weights.format !== 'fp32') {
    logger.info({ weights: options.weights }, `linear layers stored as ${options.weights.format}`);
  }
  // Asked to stop while the weights loaded: no worker is started only to be stopped again.
  if (options.signal?.aborted) throw options.signal.reason;
  if (model.source.builtIn) {
    logger.info(
      { model: model.source.id, path: model.source.path, builtIn: true },
      `no --model given: serving the built-in default ${model.source.id} (a TinyStories model; --model picks another)`,
    );
  } else if (model.source.kind === 'synthetic' && options.loadedModel === undefined) {
    logger.warn(
      { model: model.source.id, description: model.source.description },
      'serving the SYNTHETIC model (random weights, not a trained model; output is gibberish)',
    );
  }
  const engineOptions = {
    model,
    servedModelName: options.servedModelName,
    variants: resolveVariantArgs(options.variants ?? [], model.config),
    kvCacheBytes: options.kvCacheBytes,
    kvBlockTokens: options.kvBlockTokens,
    kvAdmission: options.kvAdmission,
    kvWatermark: options.kvWatermark,
    kvPlacement: options.kvPlacement,
    kvDtype: options.kvDtype,
    maxQueue: options.maxQueue,
    device: options.device,
    threads: options.threads,
    prefixReuse: options.prefixReuse,
  };
  if (options.inProcess) return (await import('../engine/engine.ts')).createEngine(engineOptions);
  const workerEngine = await (await import('../engine/worker/worker-engine.ts')).createWorkerEngine(
    engineOptions,
  );
  // performance.now() counts from process start: the gap before the worker is CLI and model loading.
  const phases = [
    {
      phase: 'process start → engine start',
      ms: Math.round(performance.now() - sumMs(workerEngine.startupPhases)),
    },
    ...workerEngine.startupPhases,
  ];
  logger.debug(
    { phases, processStartToReadyMs: Math.round(performance.now()) },
    `start-up: ${phases.map((p) => `${p.phase} ${Math.round(p.ms)} ms`).join(', ')}`,
  );
  return workerEngine;
}

const sumMs = (phases: readonly { ms: number }[]): number => phases.reduce((total, p) => total + p.ms, 0);

function logEngine(logger: Logger, engine: EngineClient): void {
  const { model } = engine;
  logger.info(
    {
      model: model.name,
      source: model.source.kind,
      path: model.source.path,
      description: model.source.description,
      layers: model.config.numLayers,
      contextLength: model.config.maxSeqLen,
    },
    `model ready: ${model.name} (${model.source.description})`,
  );
  for (const v of engine.variants()) {
    logger.info(
      {
        variant: v.id,
        dropAttention: v.spec.dropAttention,
        dropMlp: v.spec.dropMlp,
        kvBytesPerToken: v.kvBytesPerToken,
        kvCacheBudgetBytes: v.kvCacheBudgetBytes,
        kvBlockTokens: v.kvBlockTokens,
        kvAdmission: v.kvAdmission,
        kvCachePlacement: v.kvCachePlacement,
      },
      `variant ${v.id}: ${v.kvBytesPerToken} KV bytes/token`,
    );
  }
}

async function startGrpc(options: {
  engine: EngineClient;
  port: number;
  host: string;
  apiKey?: string;
  metrics: ServerMetrics;
  logger: Logger;
  experiments: ExperimentRouter;
}): Promise<{ port: number; close(graceMs?: number): Promise<void> } | undefined> {
  let module: typeof import('./grpc/grpc-server.ts');
  try {
    module = await import('./grpc/grpc-server.ts');
  } catch (error) {
    options.logger.warn({ err: error }, 'gRPC transport unavailable (server/grpc not loadable); HTTP only');
    return undefined;
  }
  return module.startGrpcServer(options);
}
