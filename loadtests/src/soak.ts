import { getMaxListeners, setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { DropserveError } from '../../engine/errors.ts';
import { fetchModelIds } from './models-client.ts';
import { currentCommit } from './provenance.ts';
import { computeDrift, type Drift } from './soak-drift.ts';
import { ABORT_KINDS, type AbortKind, type SoakMix, SoakPlanner } from './soak-plan.ts';
import {
  isErrorOutcome,
  type OutcomeKind,
  type SoakOutcome,
  type SoakTarget,
  sendSoakRequest,
} from './soak-request.ts';
import {
  counterDelta,
  describeSource,
  type ResourceSource,
  readProcResources,
  readResources,
  type ServerCounters,
  scrapeMetrics,
  serverCounters,
} from './soak-resources.ts';

/**
 * `dropserve loadtest soak`: a closed loop of workers sending a mix of streaming and non-streaming,
 * completions and chat requests to every served variant, a share of them cut off by the client,
 * for a long time — while the server's RSS and open fds are sampled. It answers "does the server
 * stay correct and keep its memory flat under hours of ordinary traffic?", not "how fast is it".
 */
export interface SoakOptions {
  baseUrl: string;
  apiKey?: string;
  /** Served model ids to use; default every id from GET /v1/models. */
  models?: string[];
  /** Closed-loop workers. Default 8. */
  concurrency?: number;
  /** Stop issuing after this long; in-flight requests finish. */
  durationS?: number;
  /** Stop after issuing this many requests. At least one of durationS / requests is required. */
  requests?: number;
  /** Defaults: stream 0.5, chat 0.5, abort 0.1, 32 prompt words, max_tokens 8-64. */
  mix?: Partial<Omit<SoakMix, 'models'>>;
  temperature?: number;
  /** Default 10 s. */
  sampleEveryS?: number;
  /** Drift is measured from the first sample at or after this time (default 120 s). */
  driftFromS?: number;
  /** Read RSS and fds from /proc/PID instead of the server's /metrics. */
  pid?: number;
  seed?: number;
  /** Per request. Default 60 s. */
  timeoutMs?: number;
  /** Errors kept with their details in the report (all are counted). Default 50. */
  keepErrors?: number;
  /** Interrupting stops issuing and cancels in-flight requests; the report covers what ran. */
  signal?: AbortSignal;
  onSample?: (sample: SoakSample) => void;
}

export interface SoakConfig {
  baseUrl: string;
  models: string[];
  concurrency: number;
  durationS: number | null;
  requests: number | null;
  streamShare: number;
  chatShare: number;
  abortShare: number;
  promptWords: number;
  maxTokens: { min: number; max: number };
  temperature: number;
  sampleEveryS: number;
  driftFromS: number;
  resourceSource: string;
  seed: number;
  timeoutMs: number;
}

export interface SoakSample {
  /** Seconds since the soak started. */
  atS: number;
  rssBytes: number | null;
  openFds: number | null;
  /** Requests finished so far (any outcome). */
  requests: number;
  errors: number;
  aborted: number;
  inFlight: number;
}

export interface SoakReport {
  config: SoakConfig;
  commit: string;
  startedAt: string;
  durationS: number;
  requests: number;
  outcomes: Record<OutcomeKind, number>;
  errors: number;
  /** Counts per error detail, e.g. {"http_503 server_overloaded": 2, "missing_done": 1}. */
  errorsByDetail: Record<string, number>;
  /** The first keepErrors failed requests, with messages. */
  errorSamples: SoakOutcome[];
  aborts: {
    planned: number;
    made: number;
    /** Planned, but the request finished first (counted as ok). */
    finishedFirst: number;
    byPoint: Record<AbortKind, { planned: number; made: number }>;
  };
  mix: {
    streaming: number;
    nonStreaming: number;
    chat: number;
    completions: number;
    byModel: Record<string, number>;
  };
  throughput: { okPerS: number; completionTokens: number; outputTokensPerS: number };
  resources: {
    source: string;
    samples: SoakSample[];
    rss: Drift | null;
    openFds: Drift | null;
    /** Why there are no readings, when there are none. */
    note?: string;
  };
  /** The server's own counters over the run (null when /metrics did not answer). */
  server: ServerCounters | null;
}

const DEFAULT_MIX: Omit<SoakMix, 'models'> = {
  streamShare: 0.5,
  chatShare: 0.5,
  abortShare: 0.1,
  promptWords: 32,
  maxTokens: { min: 8, max: 64 },
};

/** How long the server's counters may take to settle after the last response. */
const COUNTER_SETTLE_MS = 5000;

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const config = await resolveConfig(options);
  const mix: SoakMix = { ...DEFAULT_MIX, ...options.mix, models: config.models };
  const planner = new SoakPlanner(mix, config.seed);
  const source: ResourceSource =
    options.pid === undefined
      ? { kind: 'metrics', baseUrl: config.baseUrl, apiKey: options.apiKey }
      : { kind: 'proc', pid: options.pid };
  if (source.kind === 'proc') await checkProcReadable(source.pid);

  const dispatcher = new Agent({ keepAliveTimeout: 30_000, pipelining: 1 });
  const target: SoakTarget = {
    baseUrl: config.baseUrl,
    apiKey: options.apiKey,
    timeoutMs: config.timeoutMs,
    temperature: config.temperature,
    dispatcher,
  };
  const tally = new Tally(options.keepErrors ?? 50);
  const countersBefore = await scrapeMetrics(config.baseUrl, options.apiKey);
  const startedAt = new Date().toISOString();
  const startMs = performance.now();
  const elapsedS = (): number => (performance.now() - startMs) / 1000;
  const deadlineMs = config.durationS === null ? Number.POSITIVE_INFINITY : startMs + config.durationS * 1000;

  const samples: SoakSample[] = [];
  const takeSample = async (): Promise<void> => {
    const reading = await readResources(source);
    const sample: SoakSample = { atS: elapsedS(), ...reading, ...tally.progress() };
    samples.push(sample);
    options.onSample?.(sample);
  };
  const stopSampling = new AbortController();
  await takeSample();
  const sampler = (async (): Promise<void> => {
    for (let tick = 1; ; tick++) {
      const waitMs = startMs + tick * config.sampleEveryS * 1000 - performance.now();
      try {
        if (waitMs > 0) await sleep(waitMs, undefined, { signal: stopSampling.signal });
      } catch {
        return;
      }
      await takeSample();
    }
  })();

  // Each in-flight request listens on the run's signal and removes its listener when it ends.
  const listenerLimit = options.signal ? getMaxListeners(options.signal) : 0;
  if (options.signal) setMaxListeners(0, options.signal);
  let durationS: number;
  try {
    let issued = 0;
    const canIssue = (): boolean =>
      (config.requests === null || issued < config.requests) &&
      performance.now() < deadlineMs &&
      !options.signal?.aborted;
    const worker = async (): Promise<void> => {
      while (canIssue()) {
        issued++;
        const plan = planner.next();
        tally.start();
        tally.finish(await sendSoakRequest(target, plan, options.signal));
      }
    };
    try {
      await Promise.all(Array.from({ length: config.concurrency }, worker));
    } finally {
      stopSampling.abort();
      await sampler;
    }
    durationS = elapsedS();
    // The last sample is taken while the harness still holds its keep-alive connections, as every
    // sample before it did, so the fd count compares like with like.
    await takeSample();
  } finally {
    if (options.signal) setMaxListeners(listenerLimit, options.signal);
    await dispatcher.close();
  }
  const countersAfter =
    countersBefore === null ? null : await settledCounters(config.baseUrl, options.apiKey);
  return buildReport({
    config,
    startedAt,
    durationS,
    tally,
    samples,
    source,
    countersBefore: countersBefore === null ? null : serverCounters(countersBefore),
    countersAfter,
  });
}

async function resolveConfig(options: SoakOptions): Promise<SoakConfig> {
  if (options.durationS === undefined && options.requests === undefined) {
    throw new RangeError('a soak needs a stop condition: a duration, a request count or both');
  }
  const models = options.models ?? (await fetchModelIds(options.baseUrl, options.apiKey));
  if (!models || models.length === 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `no models given and ${options.baseUrl}/v1/models listed none; pass --variants NAME,…`,
    );
  }
  const mix = { ...DEFAULT_MIX, ...options.mix };
  const config: SoakConfig = {
    baseUrl: options.baseUrl,
    models,
    concurrency: options.concurrency ?? 8,
    durationS: options.durationS ?? null,
    requests: options.requests ?? null,
    streamShare: mix.streamShare,
    chatShare: mix.chatShare,
    abortShare: mix.abortShare,
    promptWords: mix.promptWords,
    maxTokens: mix.maxTokens,
    temperature: options.temperature ?? 0.8,
    sampleEveryS: options.sampleEveryS ?? 10,
    driftFromS: options.driftFromS ?? 120,
    resourceSource: describeSource(
      options.pid === undefined
        ? { kind: 'metrics', baseUrl: options.baseUrl }
        : { kind: 'proc', pid: options.pid },
    ),
    seed: options.seed ?? 0,
    timeoutMs: options.timeoutMs ?? 60_000,
  };
  const positive = (name: string, value: number | null, isInteger: boolean): void => {
    if (value !== null && !(value > 0 && Number.isFinite(value) && (!isInteger || Number.isInteger(value)))) {
      throw new RangeError(`${name} must be a positive ${isInteger ? 'integer' : 'number'}, found ${value}`);
    }
  };
  positive('concurrency', config.concurrency, true);
  positive('requests', config.requests, true);
  positive('duration', config.durationS, false);
  positive('sample interval', config.sampleEveryS, false);
  positive('timeout', config.timeoutMs, false);
  if (!(config.driftFromS >= 0)) throw new RangeError(`drift start must be >= 0, found ${config.driftFromS}`);
  return config;
}

async function checkProcReadable(pid: number): Promise<void> {
  try {
    await readProcResources(pid);
  } catch (error) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--pid ${pid}: cannot read /proc/${pid}/status and /proc/${pid}/fd (no such process on this machine, or not ours)`,
      { cause: error },
    );
  }
}

/**
 * The server counts a finish a step after it writes the last chunk, so read /metrics until two
 * scrapes in a row agree (or give up after a few seconds and take the last one).
 */
async function settledCounters(baseUrl: string, apiKey: string | undefined): Promise<ServerCounters | null> {
  const deadline = performance.now() + COUNTER_SETTLE_MS;
  let previous: string | null = null;
  let counters: ServerCounters | null = null;
  while (performance.now() < deadline) {
    const samples = await scrapeMetrics(baseUrl, apiKey);
    if (!samples) return counters;
    counters = serverCounters(samples);
    const fingerprint = JSON.stringify(counters);
    if (fingerprint === previous) return counters;
    previous = fingerprint;
    await sleep(250);
  }
  return counters;
}

/** Running counts of a soak; cheap enough to update on every request. */
class Tally {
  readonly outcomes: Record<OutcomeKind, number> = {
    ok: 0,
    aborted: 0,
    interrupted: 0,
    http_error: 0,
    stream_error: 0,
    protocol_error: 0,
    network_error: 0,
  };
  readonly errorsByDetail: Record<string, number> = {};
  readonly errorSamples: SoakOutcome[] = [];
  readonly abortsByPoint = Object.fromEntries(ABORT_KINDS.map((k) => [k, { planned: 0, made: 0 }])) as Record<
    AbortKind,
    { planned: number; made: number }
  >;
  readonly mix = {
    streaming: 0,
    nonStreaming: 0,
    chat: 0,
    completions: 0,
    byModel: {} as Record<string, number>,
  };
  finished = 0;
  errors = 0;
  abortsFinishedFirst = 0;
  completionTokens = 0;
  inFlight = 0;
  readonly #keepErrors: number;

  constructor(keepErrors: number) {
    this.#keepErrors = keepErrors;
  }

  start(): void {
    this.inFlight++;
  }

  finish(outcome: SoakOutcome): void {
    this.inFlight--;
    this.finished++;
    this.outcomes[outcome.kind]++;
    if (outcome.isStreaming) this.mix.streaming++;
    else this.mix.nonStreaming++;
    if (outcome.endpoint === 'chat') this.mix.chat++;
    else this.mix.completions++;
    this.mix.byModel[outcome.model] = (this.mix.byModel[outcome.model] ?? 0) + 1;
    if (outcome.plannedAbort !== null) {
      const point = this.abortsByPoint[outcome.plannedAbort];
      point.planned++;
      if (outcome.kind === 'aborted') point.made++;
    }
    if (outcome.isAbortMissed) this.abortsFinishedFirst++;
    if (outcome.kind === 'ok') this.completionTokens += outcome.completionTokens;
    if (isErrorOutcome(outcome.kind)) {
      this.errors++;
      const detail = outcome.detail ?? outcome.kind;
      this.errorsByDetail[detail] = (this.errorsByDetail[detail] ?? 0) + 1;
      if (this.errorSamples.length < this.#keepErrors) this.errorSamples.push(outcome);
    }
  }

  progress(): Pick<SoakSample, 'requests' | 'errors' | 'aborted' | 'inFlight'> {
    return {
      requests: this.finished,
      errors: this.errors,
      aborted: this.outcomes.aborted,
      inFlight: this.inFlight,
    };
  }
}

function buildReport(parts: {
  config: SoakConfig;
  startedAt: string;
  durationS: number;
  tally: Tally;
  samples: SoakSample[];
  source: ResourceSource;
  countersBefore: ServerCounters | null;
  countersAfter: ServerCounters | null;
}): SoakReport {
  const { config, tally, samples, durationS } = parts;
  const perS = (n: number): number => (durationS > 0 ? n / durationS : 0);
  const rss = computeDrift(
    samples.map((s) => ({ atS: s.atS, value: s.rssBytes })),
    config.driftFromS,
  );
  const openFds = computeDrift(
    samples.map((s) => ({ atS: s.atS, value: s.openFds })),
    config.driftFromS,
  );
  const hasReadings = samples.some((s) => s.rssBytes !== null || s.openFds !== null);
  const note = hasReadings
    ? undefined
    : parts.source.kind === 'metrics'
      ? 'the server exports no process_resident_memory_bytes / process_open_fds (process metrics off?); pass --pid PID when it runs on this machine'
      : `/proc/${parts.source.pid} could not be read during the run`;
  const { before, after } = { before: parts.countersBefore, after: parts.countersAfter };
  const aborts = Object.values(tally.abortsByPoint);
  return {
    config,
    commit: currentCommit(),
    startedAt: parts.startedAt,
    durationS,
    requests: tally.finished,
    outcomes: tally.outcomes,
    errors: tally.errors,
    errorsByDetail: tally.errorsByDetail,
    errorSamples: tally.errorSamples,
    aborts: {
      planned: aborts.reduce((s, a) => s + a.planned, 0),
      made: aborts.reduce((s, a) => s + a.made, 0),
      finishedFirst: tally.abortsFinishedFirst,
      byPoint: tally.abortsByPoint,
    },
    mix: tally.mix,
    throughput: {
      okPerS: perS(tally.outcomes.ok),
      completionTokens: tally.completionTokens,
      outputTokensPerS: perS(tally.completionTokens),
    },
    resources: { source: config.resourceSource, samples, rss, openFds, ...(note ? { note } : {}) },
    server:
      before && after
        ? {
            finishedByReason: counterDelta(before.finishedByReason, after.finishedByReason),
            rejectedByReason: counterDelta(before.rejectedByReason, after.rejectedByReason),
          }
        : null,
  };
}
