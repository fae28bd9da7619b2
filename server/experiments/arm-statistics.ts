import { addObservation, emptyMoments, type Moments, mergeMoments } from './statistics.ts';

export const LATENCY_METRICS = ['ttft_ms', 'tpot_ms', 'e2e_ms', 'output_tokens_per_s'] as const;
export const FIDELITY_METRICS = ['agreement', 'kl', 'delta_nll'] as const;
export type LatencyMetric = (typeof LATENCY_METRICS)[number];
export type FidelityMetric = (typeof FIDELITY_METRICS)[number];

/**
 * The sufficient statistics of one experiment arm, as JSON: per metric the count, sum and sum of
 * squares of per-request values, and for each ttft_p90_ms guardrail threshold the number of
 * requests slower than it. Two replicas' statistics add field by field (mergeArmStatistics), and
 * every interval and verdict in a report is a function of these alone.
 */
export interface ArmStatistics {
  variant: string;
  latency: Record<LatencyMetric, Moments>;
  fidelity: Record<FidelityMetric, Moments>;
  /** Threshold in ms (as written in the guardrail) → requests whose TTFT exceeded it. */
  ttft_over_ms: Record<string, number>;
}

/** One completed request, as the metrics observe it. */
export interface RequestObservation {
  ttftMs?: number;
  /** Only with ≥ 2 output tokens. */
  tpotMs?: number;
  e2eMs?: number;
  outputTokens: number;
}

/** One shadow-scored request: means over its generated positions. */
export interface FidelityObservation {
  agreement: number;
  klMean: number;
  deltaNllMean: number;
}

export function emptyArmStatistics(variant: string, ttftThresholdsMs: readonly number[] = []): ArmStatistics {
  const byName = <K extends string>(names: readonly K[]): Record<K, Moments> =>
    Object.fromEntries(names.map((n) => [n, emptyMoments()])) as Record<K, Moments>;
  return {
    variant,
    latency: byName(LATENCY_METRICS),
    fidelity: byName(FIDELITY_METRICS),
    ttft_over_ms: Object.fromEntries(ttftThresholdsMs.map((t) => [String(t), 0])),
  };
}

export function observeRequestIn(stats: ArmStatistics, r: RequestObservation): void {
  if (r.ttftMs !== undefined) {
    addObservation(stats.latency.ttft_ms, r.ttftMs);
    for (const key of Object.keys(stats.ttft_over_ms)) {
      if (r.ttftMs > Number(key)) stats.ttft_over_ms[key]! += 1;
    }
  }
  if (r.tpotMs !== undefined) addObservation(stats.latency.tpot_ms, r.tpotMs);
  if (r.e2eMs !== undefined) {
    addObservation(stats.latency.e2e_ms, r.e2eMs);
    // Per-request rate (what one user sees), so its mean is a plain ratio-of-means input.
    if (r.e2eMs > 0 && r.outputTokens > 0) {
      addObservation(stats.latency.output_tokens_per_s, (r.outputTokens * 1000) / r.e2eMs);
    }
  }
}

export function observeFidelityIn(stats: ArmStatistics, f: FidelityObservation): void {
  addObservation(stats.fidelity.agreement, f.agreement);
  // KL is NaN when the variant's distribution was not recorded; the other two still count.
  if (Number.isFinite(f.klMean)) addObservation(stats.fidelity.kl, f.klMean);
  addObservation(stats.fidelity.delta_nll, f.deltaNllMean);
}

/** Field-by-field sum; thresholds present on one side only are kept as they are. */
export function mergeArmStatistics(a: ArmStatistics, b: ArmStatistics): ArmStatistics {
  const mergeAll = <K extends string>(x: Record<K, Moments>, y: Record<K, Moments>): Record<K, Moments> =>
    Object.fromEntries(
      Object.keys(x).map((k) => [k, mergeMoments(x[k as K], y[k as K] ?? emptyMoments())]),
    ) as Record<K, Moments>;
  const over: Record<string, number> = { ...a.ttft_over_ms };
  for (const [key, count] of Object.entries(b.ttft_over_ms)) over[key] = (over[key] ?? 0) + count;
  return {
    variant: a.variant,
    latency: mergeAll(a.latency, b.latency),
    fidelity: mergeAll(a.fidelity, b.fidelity),
    ttft_over_ms: over,
  };
}
