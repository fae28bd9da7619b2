import {
  type ArmStatistics,
  emptyArmStatistics,
  FIDELITY_METRICS,
  type FidelityMetric,
  LATENCY_METRICS,
  type LatencyMetric,
} from './arm-statistics.ts';
import type { ExperimentScope } from './experiment-router.ts';
import { checkGuardrail, type Guardrail, type GuardrailCheck } from './guardrails.ts';
import { differenceOfMeans, type Interval, meanInterval, meanOf, ratioOfMeans } from './statistics.ts';
import { type Direction, MIN_SAMPLES_FOR_VERDICT, type Verdict, verdictOf } from './verdict.ts';

/**
 * GET /v1/experiments/{name}/report and `dropserve loadtest ab-report`: one function turns an
 * experiment's arms and their sufficient statistics into the report, so a merge of replicas'
 * statistics gives exactly the report one server fed all the traffic would give.
 */
export const REPORT_METHOD = {
  latency: 'ratio of means arm/control; 95% interval by the delta method on log(mean ratio), Welch variances',
  fidelity:
    'mean over shadow-scored requests (each request: mean over its generated positions); difference to control',
  sequential: `95% normal-mixture confidence sequence (mSPRT), valid under continuous monitoring; verdict after ≥ ${MIN_SAMPLES_FOR_VERDICT} observations per arm`,
} as const;

/** Mixing scale of the sequences: 5% on the log-ratio scale, 0.05 in agreement/nats. */
export const SEQUENCE_TAU = 0.05;

const LATENCY_DIRECTION: Record<LatencyMetric, Direction> = {
  ttft_ms: 'lower-is-better',
  tpot_ms: 'lower-is-better',
  e2e_ms: 'lower-is-better',
  output_tokens_per_s: 'higher-is-better',
};
const FIDELITY_DIRECTION: Record<FidelityMetric, Direction> = {
  agreement: 'higher-is-better',
  kl: 'lower-is-better',
  delta_nll: 'lower-is-better',
};
/** The full model's own fidelity, by definition. */
const FULL_MODEL_FIDELITY: Record<FidelityMetric, number> = { agreement: 1, kl: 0, delta_nll: 0 };

export type IntervalPairJson = { ci95: [number, number]; cs95: [number, number] } | null;

export interface LatencyComparison {
  direction: Direction;
  control_mean: number | null;
  arm_mean: number | null;
  n_control: number;
  n_arm: number;
  /** mean(arm) / mean(control). */
  ratio: number | null;
  ci95: [number, number] | null;
  cs95: [number, number] | null;
  verdict: Verdict;
}

export interface FidelityComparison {
  direction: Direction;
  /** The control's value: known (1 / 0) when the control is the full model. */
  control_mean: number | null;
  control_is_full_model: boolean;
  arm_mean: number | null;
  n_control: number;
  n_arm: number;
  /** 95% interval and sequence of the arm's mean. */
  arm_ci95: [number, number] | null;
  arm_cs95: [number, number] | null;
  /** arm − control. */
  difference: number | null;
  ci95: [number, number] | null;
  cs95: [number, number] | null;
  verdict: Verdict;
}

export interface TrippedGuardrail {
  tripped: true;
  metric: string;
  threshold: number;
  op: string;
  /** Observations when it tripped (on this replica). */
  at_n: number;
  reason: string;
}

export interface ArmReport {
  variant: string;
  weight: number;
  share: number;
  is_control: boolean;
  /** Takes no new traffic: a guardrail tripped (its users go to the control). */
  drained: boolean;
  /** The tripped guardrail on this replica, else null. */
  guardrail: TrippedGuardrail | null;
  /** Every configured guardrail against these statistics (breached = the sequence is past the bar). */
  guardrail_checks: (Omit<GuardrailCheck, 'sequence'> & { cs95: [number, number] | null })[];
  /** Completed requests behind the latency figures. */
  requests: number;
  /** Shadow-scored requests behind the fidelity figures. */
  scored_requests: number;
  latency: Record<LatencyMetric, LatencyComparison> | null;
  fidelity: Record<FidelityMetric, FidelityComparison> | null;
  /** Display only: p50/p90 of a bounded reservoir of recent requests (absent in merged reports). */
  sample_quantiles?: Record<LatencyMetric, { p50: number; p90: number } | null>;
}

export interface ExperimentReport {
  object: 'experiment.report';
  name: string;
  scope: ExperimentScope;
  control: string;
  full_model: string | null;
  /** Replicas whose statistics this report adds up (1 from a server). */
  replicas: number;
  method: typeof REPORT_METHOD;
  guardrails: Guardrail[];
  arms: ArmReport[];
  /** The mergeable sufficient statistics behind every figure above, per arm. */
  statistics: ArmStatistics[];
}

export interface ReportInput {
  name: string;
  scope: ExperimentScope;
  arms: { variant: string; weight: number }[];
  control: string;
  fullModel: string | undefined;
  guardrails: readonly Guardrail[];
  statistics: ReadonlyMap<string, ArmStatistics>;
  tripped: ReadonlyMap<string, TrippedGuardrail>;
  drained: ReadonlySet<string>;
  replicas?: number;
  quantiles?: ReadonlyMap<string, ArmReport['sample_quantiles']>;
}

const pair = (i: Interval | undefined): [number, number] | null => (i ? [i.low, i.high] : null);

export function buildReport(input: ReportInput): ExperimentReport {
  const total = input.arms.reduce((s, a) => s + a.weight, 0);
  const statsOf = (variant: string): ArmStatistics =>
    input.statistics.get(variant) ?? emptyArmStatistics(variant);
  const control = statsOf(input.control);
  const controlIsFull = input.control === input.fullModel;
  const arms = input.arms.map((a): ArmReport => {
    const stats = statsOf(a.variant);
    const isControl = a.variant === input.control;
    const isFull = a.variant === input.fullModel;
    const checks = isControl || isFull ? [] : input.guardrails.map((g) => checkGuardrail(g, stats));
    const quantiles = input.quantiles?.get(a.variant);
    return {
      variant: a.variant,
      weight: a.weight,
      share: total > 0 ? a.weight / total : 0,
      is_control: isControl,
      drained: input.drained.has(a.variant),
      guardrail: input.tripped.get(a.variant) ?? null,
      guardrail_checks: checks.map(({ sequence, ...rest }) => ({
        ...rest,
        cs95: pair(sequence ?? undefined),
      })),
      requests: stats.latency.e2e_ms.n,
      scored_requests: stats.fidelity.agreement.n,
      latency: isControl ? null : latencyComparisons(control, stats),
      fidelity: isControl || isFull ? null : fidelityComparisons(control, controlIsFull, stats),
      ...(quantiles === undefined ? {} : { sample_quantiles: quantiles }),
    };
  });
  return {
    object: 'experiment.report',
    name: input.name,
    scope: input.scope,
    control: input.control,
    full_model: input.fullModel ?? null,
    replicas: input.replicas ?? 1,
    method: REPORT_METHOD,
    guardrails: [...input.guardrails],
    arms,
    statistics: input.arms.map((a) => statsOf(a.variant)),
  };
}

const finiteOrNull = (x: number): number | null => (Number.isFinite(x) ? x : null);

function latencyComparisons(
  control: ArmStatistics,
  arm: ArmStatistics,
): Record<LatencyMetric, LatencyComparison> {
  const entries = LATENCY_METRICS.map((metric): [LatencyMetric, LatencyComparison] => {
    const a = control.latency[metric];
    const b = arm.latency[metric];
    const ratio = ratioOfMeans(a, b, SEQUENCE_TAU);
    return [
      metric,
      {
        direction: LATENCY_DIRECTION[metric],
        control_mean: finiteOrNull(meanOf(a)),
        arm_mean: finiteOrNull(meanOf(b)),
        n_control: a.n,
        n_arm: b.n,
        ratio: ratio?.fixed.estimate ?? null,
        ci95: pair(ratio?.fixed),
        cs95: pair(ratio?.sequential),
        verdict: verdictOf(ratio?.sequential ?? null, 1, LATENCY_DIRECTION[metric], Math.min(a.n, b.n)),
      },
    ];
  });
  return Object.fromEntries(entries) as Record<LatencyMetric, LatencyComparison>;
}

function fidelityComparisons(
  control: ArmStatistics,
  controlIsFull: boolean,
  arm: ArmStatistics,
): Record<FidelityMetric, FidelityComparison> {
  const entries = FIDELITY_METRICS.map((metric): [FidelityMetric, FidelityComparison] => {
    const b = arm.fidelity[metric];
    const a = control.fidelity[metric];
    const reference = controlIsFull ? { known: FULL_MODEL_FIDELITY[metric] } : a;
    const diff = differenceOfMeans(reference, b, SEQUENCE_TAU);
    const own = meanInterval(b, SEQUENCE_TAU);
    // Against a known value only the arm's sample size limits the verdict.
    const perArm = controlIsFull ? b.n : Math.min(a.n, b.n);
    return [
      metric,
      {
        direction: FIDELITY_DIRECTION[metric],
        control_mean: controlIsFull ? FULL_MODEL_FIDELITY[metric] : finiteOrNull(meanOf(a)),
        control_is_full_model: controlIsFull,
        arm_mean: finiteOrNull(meanOf(b)),
        n_control: controlIsFull ? 0 : a.n,
        n_arm: b.n,
        arm_ci95: pair(own?.fixed),
        arm_cs95: pair(own?.sequential),
        difference: diff?.fixed.estimate ?? null,
        ci95: pair(diff?.fixed),
        cs95: pair(diff?.sequential),
        verdict: verdictOf(diff?.sequential ?? null, 0, FIDELITY_DIRECTION[metric], perArm),
      },
    ];
  });
  return Object.fromEntries(entries) as Record<FidelityMetric, FidelityComparison>;
}
