import type { DatasetSpec } from './dataset.ts';
import { type LoadtestOptions, type LoadtestReport, runLoadtest } from './loadtest.ts';
import type { LoadtestSummary } from './metrics.ts';
import type { Endpoint } from './openai-stream.ts';
import { currentCommit } from './provenance.ts';
import { formatSlo, hasSlo, SLO_METRICS, type Slo, type SloMetric } from './slo.ts';
import { statAtPercentile } from './stats.ts';
import { fetchVariants, pollVariants, type VariantInfo } from './variants-client.ts';

/**
 * Capacity planning: for each model/variant, raise closed-loop concurrency level by level until the
 * SLO breaks at the chosen percentile, errors appear, or the server saturates (output throughput
 * stops growing). The answer per variant is the most concurrent users that still held the SLO, and
 * the verdict compares every variant with a baseline (the first model unless told otherwise).
 */
export interface CapacityOptions {
  baseUrl: string;
  /** Served model names, e.g. ["stories260K", "stories260K:attn-2"]. */
  models: string[];
  slo: Slo;
  /** Percentile the SLO applies to: 50, 90, 95 or 99 (default 99). */
  sloPercentile?: number;
  /** Ascending concurrency levels to try. */
  levels: number[];
  /** Measured requests per level; default max(4 × concurrency, 16). */
  requestsPerLevel?: number;
  /** Unmeasured requests before each model's first level. Default 2. */
  warmup?: number;
  apiKey?: string;
  endpoint?: Endpoint;
  dataset?: DatasetSpec;
  seed?: number;
  /** Default true: a fixed output length keeps variants comparable (a pruned model may stop earlier). */
  ignoreEos?: boolean;
  timeoutMs?: number;
  /** A level saturates when output throughput grows less than this fraction over the last one. Default 0.1. */
  saturationGain?: number;
  /** Failed/issued ratio a level may have and still count. Default 0. */
  maxErrorRate?: number;
  /** How often /v1/variants is polled for running sequences. Default 100 ms. */
  pollIntervalMs?: number;
  /** Model the others are compared with. Default models[0]. */
  baseline?: string;
  signal?: AbortSignal;
  onLevel?: (model: string, level: LevelResult) => void;
  /**
   * How one level is measured. Default: a real closed-loop load test against baseUrl. Every decision
   * (SLO held, errors, saturation, the verdicts) is a function of these reports alone, so a recorded
   * run can be replayed through the planner, and its tests can feed it exact numbers.
   */
  measureLevel?: (options: LoadtestOptions) => Promise<LoadtestReport>;
}

export type StopReason = 'slo_broken' | 'errors' | 'saturated' | 'max_level' | 'aborted';

export interface LevelResult {
  concurrency: number;
  /** Observed value of each SLO metric at the SLO percentile. */
  observed: Partial<Record<SloMetric, number>>;
  holdsSlo: boolean;
  errorRate: number;
  /** Server-reported peak of running / waiting sequences for this model; null without /v1/variants. */
  maxRunning: number | null;
  maxWaiting: number | null;
  maxKvCacheUsagePerc: number | null;
  /** Sequences of this model the server preempted during the level (null: the server does not say). */
  preemptions: number | null;
  summary: LoadtestSummary;
}

export interface VariantCapacity {
  model: string;
  levels: LevelResult[];
  /** Highest concurrency that held the SLO (0: not even the first level). */
  maxConcurrency: number;
  /** Goodput (req/s meeting the SLO) at maxConcurrency; 0 when none held. */
  goodputAtMax: number;
  outputThroughputAtMax: number;
  stopReason: StopReason;
  /** The level that ended the sweep, if it was not the last one. */
  stoppedAt: number | null;
  kvBytesPerToken: number | null;
  kvBudgetBytes: number | null;
  /** KV budget ÷ bytes per token: how many tokens of context the budget holds for this variant. */
  kvBudgetTokens: number | null;
  /** Peak running sequences the server reported across all levels. */
  maxRunningObserved: number | null;
  /**
   * Top-1 agreement with the full model from the server's shadow scoring (GET /v1/variants, read
   * after the sweep); 1 for the full model, null when the server scored none. `loadtest plan`
   * uses it for --min-agreement.
   */
  agreement: number | null;
  agreementSamples: number;
  variant: VariantInfo | null;
}

export interface CapacityReport {
  config: {
    baseUrl: string;
    models: string[];
    baseline: string;
    slo: Slo;
    sloPercentile: number;
    levels: number[];
    requestsPerLevel: number | null;
    endpoint: Endpoint;
    dataset: string;
    ignoreEos: boolean;
    saturationGain: number;
    maxErrorRate: number;
  };
  commit: string;
  startedAt: string;
  variantsAvailable: boolean;
  variants: VariantCapacity[];
  /** One line per non-baseline variant, e.g. "m:attn-2 holds 1.6× the users of m at p99 TTFT ≤ 500 ms". */
  verdicts: string[];
}

/** start, start×factor, … up to max (rounded, strictly increasing). */
export function geometricLevels(start: number, max: number, factor: number): number[] {
  if (!(Number.isInteger(start) && start >= 1))
    throw new RangeError(`--start must be an integer >= 1, found ${start}`);
  if (!(max >= start)) throw new RangeError(`--max must be >= --start (${start}), found ${max}`);
  if (!(factor > 1)) throw new RangeError(`--factor must be > 1, found ${factor}`);
  const levels: number[] = [];
  for (let x = start; Math.round(x) <= max; x *= factor) {
    const level = Math.round(x);
    if (level > (levels[levels.length - 1] ?? 0)) levels.push(level);
  }
  return levels;
}

export async function runCapacity(options: CapacityOptions): Promise<CapacityReport> {
  const percentile = options.sloPercentile ?? 99;
  validateCapacityOptions(options, percentile);
  const baseline = options.baseline ?? options.models[0]!;
  const saturationGain = options.saturationGain ?? 0.1;
  const maxErrorRate = options.maxErrorRate ?? 0;
  const ignoreEos = options.ignoreEos ?? true;
  const startedAt = new Date().toISOString();
  const initialVariants = await fetchVariants(options.baseUrl, { apiKey: options.apiKey });
  const results: VariantCapacity[] = [];
  let datasetDescription = '';

  for (const model of options.models) {
    if (options.signal?.aborted) break;
    const variant = initialVariants?.find((v) => v.id === model) ?? null;
    const levels: LevelResult[] = [];
    let stopReason: StopReason = 'max_level';
    let stoppedAt: number | null = null;
    for (const [i, concurrency] of options.levels.entries()) {
      const before = await preemptionsOf(options.baseUrl, model, options.apiKey);
      const poller = pollVariants(options.baseUrl, options.pollIntervalMs ?? 100, { apiKey: options.apiKey });
      const loadOptions: LoadtestOptions = {
        baseUrl: options.baseUrl,
        model,
        apiKey: options.apiKey,
        endpoint: options.endpoint,
        dataset: options.dataset,
        concurrency,
        requests: options.requestsPerLevel ?? Math.max(4 * concurrency, 16),
        warmup: i === 0 ? (options.warmup ?? 2) : 0,
        slo: options.slo,
        seed: options.seed,
        ignoreEos,
        timeoutMs: options.timeoutMs,
        signal: options.signal,
      };
      const report = await (options.measureLevel ?? runLoadtest)(loadOptions);
      const peak = (await poller.stop()).get(model);
      datasetDescription = report.config.dataset;
      const level = evaluateLevel(concurrency, report.summary, options.slo, percentile, maxErrorRate, peak);
      const after = await preemptionsOf(options.baseUrl, model, options.apiKey);
      level.preemptions = before === null || after === null ? null : after - before;
      levels.push(level);
      options.onLevel?.(model, level);

      if (options.signal?.aborted) {
        stopReason = 'aborted';
        stoppedAt = concurrency;
        break;
      }
      if (level.errorRate > maxErrorRate) {
        stopReason = 'errors';
      } else if (!level.holdsSlo) {
        stopReason = 'slo_broken';
      } else if (i > 0 && isSaturated(levels[i - 1]!.summary, level.summary, saturationGain)) {
        stopReason = 'saturated';
      }
      if (stopReason !== 'max_level') {
        stoppedAt = concurrency;
        break;
      }
    }
    results.push(summarizeVariant(model, levels, stopReason, stoppedAt, variant));
  }
  // Shadow scores accumulate while the sweep runs, so agreement is read once it is over.
  const finalVariants = await fetchVariants(options.baseUrl, { apiKey: options.apiKey });
  for (const result of results) {
    const info = finalVariants?.find((v) => v.id === result.model) ?? result.variant;
    const isFull = info !== null && info.base === result.model;
    result.agreement = isFull ? 1 : (info?.agreement ?? null);
    result.agreementSamples = info?.agreementSamples ?? 0;
  }

  return {
    config: {
      baseUrl: options.baseUrl,
      models: options.models,
      baseline,
      slo: options.slo,
      sloPercentile: percentile,
      levels: options.levels,
      requestsPerLevel: options.requestsPerLevel ?? null,
      endpoint: options.endpoint ?? 'completions',
      dataset: datasetDescription,
      ignoreEos,
      saturationGain,
      maxErrorRate,
    },
    commit: currentCommit(),
    startedAt,
    variantsAvailable: initialVariants !== null,
    variants: results,
    verdicts: verdictLines(results, baseline, options.slo, percentile, options.levels),
  };
}

/** The server's cumulative preemption count for one model, or null when it does not report one. */
async function preemptionsOf(baseUrl: string, model: string, apiKey?: string): Promise<number | null> {
  const variants = await fetchVariants(baseUrl, { apiKey });
  return variants?.find((v) => v.id === model)?.numPreemptions ?? null;
}

function validateCapacityOptions(options: CapacityOptions, percentile: number): void {
  if (options.models.length === 0) throw new RangeError('at least one model is needed');
  if (!hasSlo(options.slo)) throw new RangeError('capacity planning needs an SLO, e.g. ttft_ms:500');
  if (![50, 90, 95, 99].includes(percentile)) {
    throw new RangeError(`SLO percentile must be 50, 90, 95 or 99, found ${percentile}`);
  }
  if (options.levels.length === 0) throw new RangeError('at least one concurrency level is needed');
  options.levels.forEach((level, i) => {
    if (!(Number.isInteger(level) && level >= 1))
      throw new RangeError(`levels must be integers >= 1, found ${level}`);
    if (i > 0 && level <= options.levels[i - 1]!) throw new RangeError('levels must be strictly increasing');
  });
  if (options.baseline !== undefined && !options.models.includes(options.baseline)) {
    throw new RangeError(
      `baseline ${options.baseline} is not one of the models (${options.models.join(', ')})`,
    );
  }
}

export function evaluateLevel(
  concurrency: number,
  summary: LoadtestSummary,
  slo: Slo,
  percentile: number,
  maxErrorRate: number,
  peak:
    | { maxRunning: number | null; maxWaiting: number | null; maxKvCacheUsagePerc: number | null }
    | undefined,
): LevelResult {
  const observed: Partial<Record<SloMetric, number>> = {};
  let holdsSlo = summary.completed > 0;
  for (const metric of SLO_METRICS) {
    const limit = slo[metric];
    if (limit === undefined) continue;
    const value = statAtPercentile(summary[metric], percentile);
    observed[metric] = value;
    // NaN (no successful request, or no request with > 1 token for TPOT) cannot show the SLO held,
    // except TPOT, which vLLM treats as 0 for single-token requests.
    if (Number.isNaN(value) ? metric !== 'tpotMs' : value > limit) holdsSlo = false;
  }
  const issued = summary.completed + summary.failed;
  const errorRate = issued === 0 ? 0 : summary.failed / issued;
  return {
    concurrency,
    observed,
    // A level that sheds load has not held the SLO for the users it turned away.
    holdsSlo: holdsSlo && errorRate <= maxErrorRate,
    errorRate,
    maxRunning: peak?.maxRunning ?? null,
    maxWaiting: peak?.maxWaiting ?? null,
    maxKvCacheUsagePerc: peak?.maxKvCacheUsagePerc ?? null,
    preemptions: null,
    summary,
  };
}

/** More users no longer buy throughput: output tokens/s (requests/s without usage) grew < gain. */
export function isSaturated(previous: LoadtestSummary, current: LoadtestSummary, gain: number): boolean {
  const useTokens = previous.outputThroughput > 0 && current.outputThroughput > 0;
  const before = useTokens ? previous.outputThroughput : previous.requestThroughput;
  const after = useTokens ? current.outputThroughput : current.requestThroughput;
  return after < before * (1 + gain);
}

function summarizeVariant(
  model: string,
  levels: LevelResult[],
  stopReason: StopReason,
  stoppedAt: number | null,
  variant: VariantInfo | null,
): VariantCapacity {
  // Only an unbroken run of held levels counts: a level after a failed one is never measured anyway.
  let best: LevelResult | undefined;
  for (const level of levels) {
    if (!level.holdsSlo) break;
    best = level;
  }
  const runningPeaks = levels.map((l) => l.maxRunning).filter((x): x is number => x !== null);
  const kvBytesPerToken = variant?.kvBytesPerToken ?? null;
  const kvBudgetBytes = variant?.kvBudgetBytes ?? null;
  return {
    model,
    levels,
    maxConcurrency: best?.concurrency ?? 0,
    goodputAtMax: best?.summary.goodput ?? 0,
    outputThroughputAtMax: best?.summary.outputThroughput ?? 0,
    stopReason,
    stoppedAt,
    kvBytesPerToken,
    kvBudgetBytes,
    kvBudgetTokens:
      kvBytesPerToken && kvBudgetBytes !== null ? Math.floor(kvBudgetBytes / kvBytesPerToken) : null,
    maxRunningObserved: runningPeaks.length === 0 ? null : Math.max(...runningPeaks),
    agreement: null,
    agreementSamples: 0,
    variant,
  };
}

/** "≥64" when the sweep ran out of levels before the SLO broke: the true capacity may be higher. */
export function formatUsers(v: VariantCapacity): string {
  return v.stopReason === 'max_level' ? `≥${v.maxConcurrency}` : String(v.maxConcurrency);
}

export function verdictLines(
  variants: readonly VariantCapacity[],
  baselineModel: string,
  slo: Slo,
  percentile: number,
  levels: readonly number[],
): string[] {
  const base = variants.find((v) => v.model === baselineModel);
  if (!base) return [];
  const sloText = formatSlo(slo, percentile);
  return variants
    .filter((v) => v !== base)
    .map((v) => {
      if (base.maxConcurrency === 0 && v.maxConcurrency === 0) {
        return `neither ${v.model} nor ${base.model} holds ${sloText} at ${levels[0]} concurrent user(s)`;
      }
      if (base.maxConcurrency === 0) {
        return `${v.model} holds ${formatUsers(v)} users at ${sloText}; ${base.model} holds none (fails at ${levels[0]})`;
      }
      if (v.maxConcurrency === 0) {
        return `${v.model} holds no users at ${sloText} (fails at ${levels[0]}); ${base.model} holds ${formatUsers(base)}`;
      }
      const ratio = v.maxConcurrency / base.maxConcurrency;
      const saturated = [v, base].filter((x) => x.stopReason === 'saturated').map((x) => x.model);
      const caveat =
        saturated.length === 0
          ? ''
          : `; ${saturated.length === 2 ? 'both' : saturated[0]} saturated (throughput stopped growing) before the SLO broke`;
      return (
        `${v.model} holds ${ratio.toFixed(1)}× the users of ${base.model} at ${sloText}` +
        ` (${formatUsers(v)} vs ${formatUsers(base)} concurrent users, goodput` +
        ` ${v.goodputAtMax.toFixed(2)} vs ${base.goodputAtMax.toFixed(2)} req/s${caveat})`
      );
    });
}
