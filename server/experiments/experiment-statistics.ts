import {
  type ArmStatistics,
  emptyArmStatistics,
  type FidelityObservation,
  LATENCY_METRICS,
  type LatencyMetric,
  observeFidelityIn,
  observeRequestIn,
  type RequestObservation,
} from './arm-statistics.ts';
import { buildReport, type ExperimentReport, type TrippedGuardrail } from './experiment-report.ts';
import type { Experiment, ExperimentRouter } from './experiment-router.ts';
import { checkGuardrail, type Guardrail, guardrailText } from './guardrails.ts';
import { Reservoir } from './reservoir.ts';

/** Requests per arm and metric kept for the display quantiles. */
export const RESERVOIR_SIZE = 512;

export interface ExperimentStatisticsOptions {
  router: ExperimentRouter;
  guardrails?: readonly Guardrail[];
  /** An arm tripped a guardrail and was drained (log it, set the metric). */
  onTrip?: (experiment: string, trip: TrippedGuardrail & { variant: string }) => void;
  random?: () => number;
}

interface ArmState {
  stats: ArmStatistics;
  reservoirs: Record<LatencyMetric, Reservoir>;
  tripped?: TrippedGuardrail;
}

/**
 * The live statistics of every experiment: each completed request and each shadow score of a
 * variant counts toward every experiment that has the variant as an arm, from the moment the
 * experiment exists (its arms are compared under the same load, whichever name a request used).
 * After each observation the guardrails of that arm are checked; a breach drains the arm.
 */
export class ExperimentStatistics {
  readonly #router: ExperimentRouter;
  readonly #guardrails: readonly Guardrail[];
  readonly #options: ExperimentStatisticsOptions;
  /** experiment name → the experiment object the arms were counted for → arm states. */
  readonly #books = new Map<string, { experiment: Experiment; arms: Map<string, ArmState> }>();

  constructor(options: ExperimentStatisticsOptions) {
    this.#router = options.router;
    this.#guardrails = options.guardrails ?? [];
    this.#options = options;
  }

  get guardrails(): readonly Guardrail[] {
    return this.#guardrails;
  }

  observeRequest(variant: string, observation: RequestObservation): void {
    for (const { name, arm } of this.#armsOf(variant)) {
      observeRequestIn(arm.stats, observation);
      const values: Record<LatencyMetric, number | undefined> = {
        ttft_ms: observation.ttftMs,
        tpot_ms: observation.tpotMs,
        e2e_ms: observation.e2eMs,
        output_tokens_per_s:
          observation.e2eMs && observation.outputTokens > 0
            ? (observation.outputTokens * 1000) / observation.e2eMs
            : undefined,
      };
      for (const metric of LATENCY_METRICS) {
        const value = values[metric];
        if (value !== undefined) arm.reservoirs[metric].add(value);
      }
      this.#checkGuardrails(name, variant, arm);
    }
  }

  observeFidelity(variant: string, observation: FidelityObservation): void {
    for (const { name, arm } of this.#armsOf(variant)) {
      observeFidelityIn(arm.stats, observation);
      this.#checkGuardrails(name, variant, arm);
    }
  }

  /** The report of one experiment; undefined when there is no such experiment. */
  report(name: string): ExperimentReport | undefined {
    const experiment = this.#router.get(name);
    if (!experiment) return undefined;
    const book = this.#bookOf(experiment);
    const statistics = new Map<string, ArmStatistics>();
    const tripped = new Map<string, TrippedGuardrail>();
    const quantiles = new Map<string, NonNullable<ReturnType<typeof quantilesOf>>>();
    for (const [variant, arm] of book.arms) {
      statistics.set(variant, arm.stats);
      if (arm.tripped) tripped.set(variant, arm.tripped);
      quantiles.set(variant, quantilesOf(arm));
    }
    return buildReport({
      name,
      scope: experiment.scope,
      arms: experiment.arms,
      control: this.#router.controlOf(experiment),
      fullModel: this.#router.fullModel(),
      guardrails: this.#guardrailsOf(experiment),
      statistics,
      tripped,
      drained: new Set(this.#router.drained(name).map((d) => d.variant)),
      quantiles,
    });
  }

  /** Every experiment's arm state for a variant, made on first use. */
  #armsOf(variant: string): { name: string; arm: ArmState }[] {
    const out: { name: string; arm: ArmState }[] = [];
    for (const experiment of this.#router.list()) {
      if (!experiment.arms.some((a) => a.variant === variant)) continue;
      out.push({ name: experiment.name, arm: this.#bookOf(experiment).arms.get(variant)! });
    }
    // Forget experiments that were deleted.
    for (const name of this.#books.keys()) if (!this.#router.has(name)) this.#books.delete(name);
    return out;
  }

  /**
   * The book of an experiment. A weight change keeps the statistics of arms that stay; a deleted
   * and re-created experiment (a new object under a name no longer in the books) starts afresh.
   */
  #bookOf(experiment: Experiment): { experiment: Experiment; arms: Map<string, ArmState> } {
    let book = this.#books.get(experiment.name);
    if (!book) {
      book = { experiment, arms: new Map() };
      this.#books.set(experiment.name, book);
    }
    book.experiment = experiment;
    for (const { variant } of experiment.arms) {
      if (!book.arms.has(variant)) book.arms.set(variant, this.#newArm(variant, experiment));
    }
    for (const variant of book.arms.keys()) {
      if (!experiment.arms.some((a) => a.variant === variant)) book.arms.delete(variant);
    }
    return book;
  }

  /** The server-wide guardrails (--experiment-guardrail) and the experiment's own (--experiments-file). */
  #guardrailsOf(experiment: Experiment): readonly Guardrail[] {
    return experiment.guardrails?.length ? [...this.#guardrails, ...experiment.guardrails] : this.#guardrails;
  }

  #newArm(variant: string, experiment: Experiment): ArmState {
    const thresholds = this.#guardrailsOf(experiment)
      .filter((g) => g.metric === 'ttft_p90_ms')
      .map((g) => g.threshold);
    const random = this.#options.random ?? Math.random;
    return {
      stats: emptyArmStatistics(variant, thresholds),
      reservoirs: Object.fromEntries(
        LATENCY_METRICS.map((m) => [m, new Reservoir(RESERVOIR_SIZE, random)]),
      ) as Record<LatencyMetric, Reservoir>,
    };
  }

  #checkGuardrails(name: string, variant: string, arm: ArmState): void {
    const experiment = this.#router.get(name);
    if (
      arm.tripped ||
      !experiment ||
      this.#guardrailsOf(experiment).length === 0 ||
      variant === this.#router.controlOf(experiment) ||
      variant === this.#router.fullModel()
    ) {
      return;
    }
    for (const g of this.#guardrailsOf(experiment)) {
      const check = checkGuardrail(g, arm.stats);
      if (!check.breached) continue;
      const shown = check.sequence
        ? `[${check.sequence.low.toFixed(3)}, ${check.sequence.high.toFixed(3)}]`
        : '';
      const what = g.metric === 'ttft_p90_ms' ? `share of requests over ${g.threshold} ms` : g.metric;
      const reason = `${guardrailText(g)} breached: 95% confidence sequence of ${what} ${shown} after ${check.n} observations`;
      arm.tripped = {
        tripped: true,
        metric: g.metric,
        op: g.op,
        threshold: g.threshold,
        at_n: check.n,
        reason,
      };
      this.#router.drain(name, variant, reason);
      this.#options.onTrip?.(name, { ...arm.tripped, variant });
      return;
    }
  }
}

function quantilesOf(arm: ArmState): Record<LatencyMetric, { p50: number; p90: number } | null> {
  return Object.fromEntries(
    LATENCY_METRICS.map((m) => {
      const p50 = arm.reservoirs[m].quantile(0.5);
      const p90 = arm.reservoirs[m].quantile(0.9);
      return [m, p50 === undefined || p90 === undefined ? null : { p50, p90 }];
    }),
  ) as Record<LatencyMetric, { p50: number; p90: number } | null>;
}
