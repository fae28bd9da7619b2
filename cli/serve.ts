import { parseArgs } from 'node:util';
import { DEVICES, type Device } from '../engine/device.ts';
import type { KvMemoryOptions } from '../engine/engine.ts';
import { DropserveError } from '../engine/errors.ts';
import type { WeightOptions } from '../engine/quant/quantize-weights.ts';
import { parseWeightFlags, WEIGHT_FLAG_SPECS } from '../engine/quant/weight-flags.ts';
import { DEFAULT_MIN_PREFIX_TOKENS } from '../engine/runtime/engine-core.ts';
import { parseByteSize } from '../server/config/byte-size.ts';
import { parseVariantFlag, type VariantArg } from '../server/config/variant-flag.ts';
import { type ExperimentArm, parseExperimentFlag } from '../server/experiments/experiment-router.ts';
import { type Guardrail, parseGuardrail } from '../server/experiments/guardrails.ts';
import { DEFAULT_MAX_BODY_BYTES } from '../server/http/app.ts';
import { createLogger, LOG_LEVELS, type LogLevel } from '../server/logger.ts';
import {
  DEFAULT_GRPC_PORT,
  DEFAULT_HTTP_PORT,
  DEFAULT_SHADOW_MAX_IN_FLIGHT,
  DEFAULT_SHUTDOWN_GRACE_MS,
  type StartServerOptions,
  startServer,
} from '../server/start-server.ts';
import { KV_FLAG_SPECS, KV_FLAGS_HELP, parseKvFlags } from './kv-flags.ts';

/** `dropserve serve`: the OpenAI-compatible HTTP server (and gRPC) over one model and its variants. */
export const SERVE_USAGE = `usage: dropserve serve [flags]

Serves a model and its pruned variants over an OpenAI-compatible HTTP API (and gRPC).
Each variant is served as a model named "<model>:<NAME>" next to the full "<model>".

model
  --model PATH|HF_ID|synthetic[:SEED]
                             llama2.c .bin checkpoint, .gguf file (llama arch), Hugging Face
                             directory, org/name from the local HF cache, or "synthetic" (random
                             weights, for API trials)
                             (default: the built-in stories260K, a TinyStories model in models/)
  --tokenizer PATH           tokenizer file or directory (default: found beside the model)
  --served-model-name NAME   name of the full model in the API (default: from the model source)
  --variant NAME=SPEC        serve a pruned variant; SPEC is a plan file or inline "attn:1,3;mlp:2"
                             (repeatable); "adaptive:attn:K[,mlp:M]" drops, per request, the K (M)
                             sublayers the prompt's own prefill finds least influential
A/B and live accuracy
  --experiment NAME=VARIANT:WEIGHT,VARIANT:WEIGHT…[,control=VARIANT]
                             serve model name NAME, split between variants by weight; sticky per
                             OpenAI "user" (gRPC: x-dropserve-user metadata), random otherwise
                             (repeatable; change at runtime with POST /v1/experiments/NAME);
                             arms are compared with the control (default: the full model) at
                             GET /v1/experiments/NAME/report
  --experiment-guardrail agreement>=X|kl<=X|delta_nll<=X|ttft_p90_ms<=X
                             an experiment arm whose 95% confidence sequence falls past the bar
                             gets no new traffic (its users go to the control arm) (repeatable)
  --experiments-file FILE    experiments every replica serves alike, JSON or YAML (e.g. a mounted
                             ConfigMap): {"experiments":[{"name","arms"|"weights","control"?,
                             "guardrails"?}]}; re-read on change, an invalid edit is rejected and
                             the configuration in force stays; its experiments are read-only in
                             the admin API
  --shadow-rate R            share 0..1 of finished pruned-variant requests re-scored by the full
                             model for live fidelity (agreement, KL, ΔNLL) (default 0: off)
  --shadow-max-in-flight N   shadow scores in flight beyond this are dropped and counted
                             (default ${DEFAULT_SHADOW_MAX_IN_FLIGHT})
engine
  --kv-cache-bytes SIZE      KV-cache budget for all variants together, e.g. 512MiB, 2GB
                             (default: a quarter of RAM)
${KV_FLAGS_HELP}
  --max-queue N              requests allowed to wait for a slot; beyond it: 429 (default 1024)
  --threads N                onnxruntime intra-op threads (default 1)
  --device cpu|cuda|webgpu   execution provider (default cpu)
  --weights fp32|fp16|int8|int4
                             storage of the linear layers (default fp32); int8/int4 are quantized
                             at load (round-to-nearest, per-block scales) into MatMulNBits
  --quant-block N            values per scale along the input dim for int8/int4 (default 32)
  --quantize-lm-head         also quantize lm_head (embeddings and norms stay float32)
  --prefix-reuse             a prompt sharing a long prefix with a running request of the same
                             variant copies that prefix's KV instead of computing it (default off)
  --prefix-reuse-min-tokens N
                             shortest shared prefix reused (default ${DEFAULT_MIN_PREFIX_TOKENS}; needs --prefix-reuse)
network
  --host HOST                interface to bind (default 0.0.0.0: every interface, as vLLM)
  --port N                   HTTP port (default ${DEFAULT_HTTP_PORT})
  --grpc-port N              gRPC port (default ${DEFAULT_GRPC_PORT}; 0 disables gRPC)
  --api-key KEY              require "Authorization: Bearer KEY" on /v1/* and gRPC
                             (default: $DROPSERVE_API_KEY; /health and /metrics stay open)
  --max-body-bytes SIZE      largest request body; larger gets 413 (default 4MiB)
operations
  --log-level LEVEL          ${LOG_LEVELS.join('|')} (default info; JSON lines on stdout)
  --shutdown-grace-ms MS     on SIGTERM/SIGINT, time in-flight requests get to finish before they
                             are cancelled; new requests get 503 meanwhile; exit 0 (a second signal
                             exits at once with 1) (default ${DEFAULT_SHUTDOWN_GRACE_MS})
  --help                     this text
`;

const FLAGS = {
  model: { type: 'string' },
  tokenizer: { type: 'string' },
  'served-model-name': { type: 'string' },
  variant: { type: 'string', multiple: true },
  experiment: { type: 'string', multiple: true },
  'experiment-guardrail': { type: 'string', multiple: true },
  'experiments-file': { type: 'string' },
  'shadow-rate': { type: 'string' },
  'shadow-max-in-flight': { type: 'string' },
  'kv-cache-bytes': { type: 'string' },
  ...KV_FLAG_SPECS,
  'max-queue': { type: 'string' },
  threads: { type: 'string' },
  device: { type: 'string' },
  ...WEIGHT_FLAG_SPECS,
  'prefix-reuse': { type: 'boolean' },
  'prefix-reuse-min-tokens': { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'grpc-port': { type: 'string' },
  'api-key': { type: 'string' },
  'max-body-bytes': { type: 'string' },
  'log-level': { type: 'string' },
  'shutdown-grace-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export interface ServeConfig {
  server: StartServerOptions;
  logLevel: LogLevel;
  shutdownGraceMs: number;
}

class UsageError extends Error {}

function integer(flag: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`--${flag} must be an integer in ${min}..${max}, got "${text}"`);
  }
  return n;
}

function byteSize(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  try {
    return parseByteSize(text);
  } catch (e) {
    throw new UsageError(`--${flag}: ${(e as Error).message}`);
  }
}

function rate(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const r = Number(text);
  if (text.trim() === '' || !(r >= 0 && r <= 1))
    throw new UsageError(`--${flag} must be a number in 0..1, got "${text}"`);
  return r;
}

/** Flags → server options; throws UsageError naming the flag. */
export function parseServeArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ServeConfig | 'help' {
  let values: ReturnType<typeof parseArgs<{ options: typeof FLAGS; strict: true }>>['values'];
  try {
    ({ values } = parseArgs({ args: argv, options: FLAGS, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return 'help';
  const logLevel = (values['log-level'] ?? 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }
  const device = values.device as Device | undefined;
  if (device !== undefined && !DEVICES.includes(device)) {
    throw new UsageError(`--device must be one of ${DEVICES.join(', ')}, got "${device}"`);
  }
  let variants: VariantArg[];
  try {
    variants = (values.variant ?? []).map(parseVariantFlag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  let experiments: { name: string; arms: ExperimentArm[]; control?: string }[];
  let experimentGuardrails: Guardrail[];
  try {
    experiments = (values.experiment ?? []).map(parseExperimentFlag);
    experimentGuardrails = (values['experiment-guardrail'] ?? []).map(parseGuardrail);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const apiKey = values['api-key'] ?? (env.DROPSERVE_API_KEY || undefined);
  if (apiKey !== undefined && apiKey.trim() === '') throw new UsageError('--api-key must not be empty');
  const minPrefixTokens = integer('prefix-reuse-min-tokens', values['prefix-reuse-min-tokens'], 1, 1_000_000);
  if (minPrefixTokens !== undefined && !values['prefix-reuse']) {
    throw new UsageError('--prefix-reuse-min-tokens needs --prefix-reuse');
  }
  let weights: WeightOptions;
  let kvMemory: KvMemoryOptions;
  try {
    weights = parseWeightFlags(values);
    kvMemory = parseKvFlags(values);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const shutdownGraceMs =
    integer('shutdown-grace-ms', values['shutdown-grace-ms'], 0, 24 * 3600 * 1000) ??
    DEFAULT_SHUTDOWN_GRACE_MS;
  return {
    logLevel,
    shutdownGraceMs,
    server: {
      model: values.model,
      tokenizer: values.tokenizer,
      servedModelName: values['served-model-name'],
      variants,
      experiments,
      experimentGuardrails,
      experimentsFile: values['experiments-file'],
      shadowRate: rate('shadow-rate', values['shadow-rate']) ?? 0,
      shadowMaxInFlight: integer('shadow-max-in-flight', values['shadow-max-in-flight'], 1, 1024),
      kvCacheBytes: byteSize('kv-cache-bytes', values['kv-cache-bytes']),
      ...kvMemory,
      maxQueue: integer('max-queue', values['max-queue'], 0, 1_000_000),
      threads: integer('threads', values.threads, 1, 1024),
      device,
      weights,
      prefixReuse: values['prefix-reuse']
        ? { minPrefixTokens: minPrefixTokens ?? DEFAULT_MIN_PREFIX_TOKENS }
        : undefined,
      host: values.host ?? '0.0.0.0',
      port: integer('port', values.port, 0, 65535) ?? DEFAULT_HTTP_PORT,
      grpcPort: integer('grpc-port', values['grpc-port'], 0, 65535) ?? DEFAULT_GRPC_PORT,
      apiKey,
      maxBodyBytes: byteSize('max-body-bytes', values['max-body-bytes']) ?? DEFAULT_MAX_BODY_BYTES,
      shutdownGraceMs,
    },
  };
}

export async function runServeCommand(argv: string[]): Promise<number> {
  let config: ServeConfig | 'help';
  try {
    config = parseServeArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`dropserve serve: ${e.message}\n\n${SERVE_USAGE}`);
    return 2;
  }
  if (config === 'help') {
    console.log(SERVE_USAGE);
    return 0;
  }
  const logger = createLogger({ level: config.logLevel });
  const shutdownAsked = new AbortController();
  const starting = startServer({ ...config.server, logger, signal: shutdownAsked.signal });
  let server: Awaited<typeof starting> | undefined;
  let isStopping = false;
  const shutDown = (running: NonNullable<typeof server>): void => {
    running.close(config.shutdownGraceMs).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // Installed before anything listens: a signal at any moment (loading, the instant /health says ok)
  // drains and exits 0 instead of Node's default kill (exit 143, every stream reset).
  const stop = (signal: NodeJS.Signals): void => {
    if (isStopping) {
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    isStopping = true;
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'signal received: shutting down');
    if (server) shutDown(server);
    else shutdownAsked.abort(new DropserveError('DS_SHUTTING_DOWN', `${signal} during start-up`));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  try {
    server = await starting;
  } catch (e) {
    if (shutdownAsked.signal.aborted) {
      logger.info('shut down (during start-up)');
      return 0;
    }
    const error = e as { code?: string; message?: string };
    logger.fatal({ err: e, code: error.code }, `could not start: ${error.message ?? String(e)}`);
    return 1;
  }
  logger.info({ http: server.httpUrl, grpcPort: server.grpcPort }, `serving on ${server.httpUrl}`);
  // The signal came after start-up had passed its last check but before this line.
  if (isStopping) shutDown(server);
  // The servers keep the process alive; main.ts must not set an exit code.
  return -1;
}
