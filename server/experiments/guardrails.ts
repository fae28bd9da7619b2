import { DropserveError } from '../../engine/errors.ts';
import type { ArmStatistics } from './arm-statistics.ts';
import { type Interval, meanInterval, proportionSequence } from './statistics.ts';
import { MIN_SAMPLES_FOR_VERDICT } from './verdict.ts';

/**
 * `--experiment-guardrail METRIC OP THRESHOLD`: a bar every non-control arm of every experiment
 * must clear. An arm trips when its 95% confidence sequence lies wholly on the wrong side of the
 * bar, which (being valid under continuous monitoring) can be checked after every request.
 */
export type GuardrailMetric = 'agreement' | 'kl' | 'delta_nll' | 'ttft_p90_ms';

export interface Guardrail {
  metric: GuardrailMetric;
  op: '>=' | '<=';
  threshold: number;
}

/** Which comparison each metric allows: agreement must stay high, the others low. */
const OPERATOR: Record<GuardrailMetric, '>=' | '<='> = {
  agreement: '>=',
  kl: '<=',
  delta_nll: '<=',
  ttft_p90_ms: '<=',
};

/** A p90 above X means more than 10% of requests are above X. */
const P90_TAIL = 0.1;
/** Mixing scale of the guardrail sequences, in the metric's own units (agreement, nats, share). */
const GUARDRAIL_TAU = 0.05;

export function parseGuardrail(text: string): Guardrail {
  const match = /^\s*([a-z_0-9]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$/.exec(text);
  const metric = match?.[1] as GuardrailMetric | undefined;
  const threshold = Number(match?.[3]);
  if (!match || metric === undefined || !(metric in OPERATOR) || !Number.isFinite(threshold)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--experiment-guardrail "${text}": expected agreement>=X, kl<=X, delta_nll<=X or ttft_p90_ms<=X`,
    );
  }
  if (match[2] !== OPERATOR[metric]) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--experiment-guardrail "${text}": ${metric} takes ${OPERATOR[metric]} (it is a ${OPERATOR[metric] === '>=' ? 'floor' : 'ceiling'})`,
    );
  }
  if (metric === 'agreement' && !(threshold >= 0 && threshold <= 1)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--experiment-guardrail "${text}": agreement is in [0, 1]`,
    );
  }
  if (threshold < 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--experiment-guardrail "${text}": threshold must be ≥ 0`,
    );
  }
  return { metric, op: match[2], threshold };
}

export const guardrailText = (g: Guardrail): string => `${g.metric}${g.op}${g.threshold}`;

export interface GuardrailCheck {
  metric: GuardrailMetric;
  op: '>=' | '<=';
  threshold: number;
  /** The confidence sequence shows the arm on the wrong side of the bar. */
  breached: boolean;
  /** Observations behind the check (scored requests for fidelity, requests with a TTFT for latency). */
  n: number;
  /**
   * The sequence the bar is compared with: the arm's mean for fidelity; for ttft_p90_ms the share of
   * requests slower than the threshold (breached when it is surely above 10%).
   */
  sequence: Interval | null;
}

/** One guardrail against one arm's sufficient statistics. */
export function checkGuardrail(g: Guardrail, arm: ArmStatistics): GuardrailCheck {
  if (g.metric === 'ttft_p90_ms') {
    const n = arm.latency.ttft_ms.n;
    const over = arm.ttft_over_ms[String(g.threshold)] ?? 0;
    const sequence = proportionSequence(over, n, GUARDRAIL_TAU);
    const breached = n >= MIN_SAMPLES_FOR_VERDICT && sequence !== null && sequence.low > P90_TAIL;
    return { ...g, breached, n, sequence };
  }
  const moments = arm.fidelity[g.metric];
  const sequence = meanInterval(moments, GUARDRAIL_TAU)?.sequential ?? null;
  const wrongSide =
    sequence !== null && (g.op === '>=' ? sequence.high < g.threshold : sequence.low > g.threshold);
  return { ...g, breached: moments.n >= MIN_SAMPLES_FOR_VERDICT && wrongSide, n: moments.n, sequence };
}
