import { getMaxListeners, setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from 'undici';
import { SeededRandom } from '../../engine/model/random.ts';
import { type ArrivalProcess, arrivalOffsetsMs, sampleGapMs, validateArrivalProcess } from './arrivals.ts';
import { createPromptSource, type DatasetSpec, type PromptSource } from './dataset.ts';
import { type LoadtestSummary, type RequestRecord, summarize, toRequestRecord } from './metrics.ts';
import { type Endpoint, type PromptSpec, type StreamTarget, sendStreamingRequest } from './openai-stream.ts';
import { currentCommit } from './provenance.ts';
import type { Slo } from './slo.ts';

/**
 * The LLM load generator. Closed loop: `concurrency` users, each sending its next request as soon as
 * the previous one finishes. Open loop: requests arrive at `ratePerS` (Gamma gaps, see arrivals.ts)
 * whether or not earlier ones finished, optionally capped at `concurrency` in flight (like vLLM's
 * --max-concurrency). Warmup requests run first, with the same concurrency, and are not measured.
 */
export interface LoadtestOptions {
  baseUrl: string;
  model: string;
  apiKey?: string;
  /** Default 'completions'. */
  endpoint?: Endpoint;
  /** Default: random, 128 words in, 128 tokens out, no spread. */
  dataset?: DatasetSpec;
  /** Closed-loop users; with ratePerS, the in-flight cap. Default 1 in closed loop. */
  concurrency?: number;
  /** Open loop when set. */
  ratePerS?: number;
  /** Gamma shape of the arrival gaps; 1 = Poisson (default). */
  burstiness?: number;
  /** Measured requests; default 100 unless durationS is given. */
  requests?: number;
  /** Stop issuing after this many seconds (in-flight requests still finish). */
  durationS?: number;
  /** Unmeasured requests sent first. Default 0. */
  warmup?: number;
  slo?: Slo;
  /** Seeds prompts and arrivals. Default 0. */
  seed?: number;
  ignoreEos?: boolean;
  /** Whole-request timeout. Default 300 000 ms. */
  timeoutMs?: number;
  /** Default 0 (greedy), as vLLM bench serve. */
  temperature?: number;
  extraBody?: Record<string, unknown>;
  /** Spread requests over this many OpenAI `user` ids (loadtest-0 …), e.g. to exercise an A/B split. */
  users?: number;
  /** Aborting stops issuing requests and cancels those in flight; the partial report is returned. */
  signal?: AbortSignal;
  onProgress?: (progress: LoadtestProgress) => void;
}

export interface LoadtestProgress {
  phase: 'warmup' | 'measure';
  completed: number;
  failed: number;
  /** Planned requests in this phase; null when bounded by duration only. */
  total: number | null;
  elapsedMs: number;
}

/** The resolved run configuration, written into every report. */
export interface LoadtestConfig {
  baseUrl: string;
  model: string;
  endpoint: Endpoint;
  mode: 'closed' | 'open';
  concurrency: number | null;
  ratePerS: number | null;
  burstiness: number;
  requests: number | null;
  durationS: number | null;
  warmup: number;
  dataset: string;
  slo: Slo;
  seed: number;
  ignoreEos: boolean;
  timeoutMs: number;
  temperature: number;
  users: number | null;
}

export interface LoadtestReport {
  config: LoadtestConfig;
  commit: string;
  startedAt: string;
  warmup: { requests: number; failed: number };
  summary: LoadtestSummary;
  requests: RequestRecord[];
}

const DEFAULT_REQUESTS = 100;

export function resolveConfig(options: LoadtestOptions, datasetDescription: string): LoadtestConfig {
  const isOpen = options.ratePerS !== undefined;
  const config: LoadtestConfig = {
    baseUrl: options.baseUrl,
    model: options.model,
    endpoint: options.endpoint ?? 'completions',
    mode: isOpen ? 'open' : 'closed',
    concurrency: options.concurrency ?? (isOpen ? null : 1),
    ratePerS: options.ratePerS ?? null,
    burstiness: options.burstiness ?? 1,
    requests: options.requests ?? (options.durationS === undefined ? DEFAULT_REQUESTS : null),
    durationS: options.durationS ?? null,
    warmup: options.warmup ?? 0,
    dataset: datasetDescription,
    slo: options.slo ?? {},
    seed: options.seed ?? 0,
    ignoreEos: options.ignoreEos ?? false,
    timeoutMs: options.timeoutMs ?? 300_000,
    temperature: options.temperature ?? 0,
    users: options.users ?? null,
  };
  checkPositiveInt('concurrency', config.concurrency);
  checkPositiveInt('users', config.users);
  checkPositiveInt('requests', config.requests);
  checkPositiveNumber('duration', config.durationS);
  checkPositiveNumber('timeout', config.timeoutMs);
  if (!Number.isInteger(config.warmup) || config.warmup < 0) {
    throw new RangeError(`warmup must be an integer >= 0, found ${config.warmup}`);
  }
  if (isOpen) validateArrivalProcess({ ratePerS: config.ratePerS!, burstiness: config.burstiness });
  return config;
}

function checkPositiveInt(name: string, value: number | null): void {
  if (value !== null && !(Number.isInteger(value) && value > 0)) {
    throw new RangeError(`${name} must be a positive integer, found ${value}`);
  }
}

function checkPositiveNumber(name: string, value: number | null): void {
  if (value !== null && !(value > 0 && Number.isFinite(value))) {
    throw new RangeError(`${name} must be a positive number, found ${value}`);
  }
}

interface Job {
  index: number;
  spec: PromptSpec;
}

export async function runLoadtest(options: LoadtestOptions): Promise<LoadtestReport> {
  const datasetSpec: DatasetSpec = options.dataset ?? {
    kind: 'random',
    inputLen: 128,
    outputLen: 128,
    lenSpread: 0,
  };
  const seed = options.seed ?? 0;
  const endpoint = options.endpoint ?? 'completions';
  // Separate streams, so the measured prompts do not depend on the warmup count.
  const prompts = await createPromptSource(datasetSpec, endpoint, seed);
  const warmupPrompts = await createPromptSource(datasetSpec, endpoint, seed + 0x9e3779b9);
  const config = resolveConfig(options, prompts.description);
  const startedAt = new Date().toISOString();
  // One connection per in-flight request; keep-alive so connection setup is not in TTFT.
  const dispatcher = new Agent({ keepAliveTimeout: 30_000, pipelining: 1 });
  const target: StreamTarget = {
    baseUrl: config.baseUrl,
    model: config.model,
    apiKey: options.apiKey,
    endpoint: config.endpoint,
    ignoreEos: config.ignoreEos,
    temperature: config.temperature,
    timeoutMs: config.timeoutMs,
    extraBody: options.extraBody,
    dispatcher,
  };
  // Every in-flight request listens on the run's signal and removes its listener when it ends, so
  // more than 10 at once is no leak: lift Node's MaxListenersExceededWarning threshold for the run.
  const signalListenerLimit = options.signal ? getMaxListeners(options.signal) : 0;
  if (options.signal) setMaxListeners(0, options.signal);
  try {
    const warmup = await runWarmup(config, target, warmupPrompts, options);
    const measured = await runMeasuredPhase(config, target, prompts, options);
    return {
      config,
      commit: currentCommit(),
      startedAt,
      warmup,
      summary: summarize(measured.records, measured.durationMs, config.slo, measured.maxInFlight),
      requests: measured.records,
    };
  } finally {
    if (options.signal) setMaxListeners(signalListenerLimit, options.signal);
    await dispatcher.close();
  }
}

async function runWarmup(
  config: LoadtestConfig,
  target: StreamTarget,
  prompts: PromptSource,
  options: LoadtestOptions,
): Promise<{ requests: number; failed: number }> {
  if (config.warmup === 0) return { requests: 0, failed: 0 };
  const startMs = performance.now();
  let completed = 0;
  let failed = 0;
  let issued = 0;
  const next = (): Job | null =>
    issued < config.warmup && !options.signal?.aborted ? { index: issued++, spec: prompts.next() } : null;
  await closedLoop(config.concurrency ?? 1, next, async (job) => {
    const result = await sendStreamingRequest(target, job.spec, options.signal);
    if (result.isOk) completed++;
    else failed++;
    options.onProgress?.({
      phase: 'warmup',
      completed,
      failed,
      total: config.warmup,
      elapsedMs: performance.now() - startMs,
    });
  });
  return { requests: issued, failed };
}

interface MeasuredPhase {
  records: RequestRecord[];
  durationMs: number;
  maxInFlight: number;
}

async function runMeasuredPhase(
  config: LoadtestConfig,
  target: StreamTarget,
  prompts: PromptSource,
  options: LoadtestOptions,
): Promise<MeasuredPhase> {
  const records: RequestRecord[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  let completed = 0;
  let failed = 0;
  const phaseStartMs = performance.now();
  const deadlineMs =
    config.durationS === null ? Number.POSITIVE_INFINITY : phaseStartMs + config.durationS * 1000;

  const execute = async (job: Job): Promise<void> => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    const result = await sendStreamingRequest(target, job.spec, options.signal);
    inFlight--;
    const record = toRequestRecord(job.index, result, phaseStartMs, job.spec.maxTokens, config.slo);
    records.push(record);
    if (record.isOk) completed++;
    else failed++;
    options.onProgress?.({
      phase: 'measure',
      completed,
      failed,
      total: config.requests,
      elapsedMs: performance.now() - phaseStartMs,
    });
  };

  const makeJob = (index: number): Job => {
    const spec = prompts.next();
    if (config.users !== null) spec.user = `loadtest-${index % config.users}`;
    return { index, spec };
  };
  let issued = 0;
  const canIssue = (): boolean =>
    (config.requests === null || issued < config.requests) &&
    performance.now() < deadlineMs &&
    !options.signal?.aborted;

  if (config.mode === 'closed') {
    const next = (): Job | null => (canIssue() ? makeJob(issued++) : null);
    await closedLoop(config.concurrency!, next, execute);
  } else {
    const arrivals: ArrivalProcess = { ratePerS: config.ratePerS!, burstiness: config.burstiness };
    const rng = new SeededRandom(config.seed ^ 0x51ed27);
    // With a fixed count, offsets are rescaled to end at count/rate, as vLLM does.
    const fixedOffsets = config.requests === null ? null : arrivalOffsetsMs(arrivals, config.requests, rng);
    let lazyOffsetMs = 0;
    const limiter = config.concurrency === null ? null : new Semaphore(config.concurrency);
    const tasks: Promise<void>[] = [];
    while (canIssue()) {
      const offsetMs = fixedOffsets ? fixedOffsets[issued]! : (lazyOffsetMs += sampleGapMs(arrivals, rng));
      if (phaseStartMs + offsetMs >= deadlineMs) break;
      await sleepUntil(phaseStartMs + offsetMs, options.signal);
      if (!canIssue()) break;
      const job = makeJob(issued++);
      tasks.push(limiter ? limiter.run(() => execute(job)) : execute(job));
    }
    await Promise.all(tasks);
  }
  records.sort((a, b) => a.index - b.index);
  return { records, durationMs: performance.now() - phaseStartMs, maxInFlight };
}

async function closedLoop(
  users: number,
  next: () => Job | null,
  execute: (job: Job) => Promise<void>,
): Promise<void> {
  const user = async (): Promise<void> => {
    for (let job = next(); job !== null; job = next()) await execute(job);
  };
  await Promise.all(Array.from({ length: users }, user));
}

async function sleepUntil(targetMs: number, signal: AbortSignal | undefined): Promise<void> {
  const waitMs = targetMs - performance.now();
  if (waitMs <= 0) return;
  try {
    await sleep(waitMs, undefined, { signal });
  } catch {
    // aborted: the caller checks the signal
  }
}

/** Counting semaphore: at most `limit` tasks run at once, the rest wait in arrival order. */
class Semaphore {
  #available: number;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#available = limit;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#available > 0) this.#available--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await task();
    } finally {
      const wake = this.#waiting.shift();
      if (wake) wake();
      else this.#available++;
    }
  }
}
