/**
 * v(S): the calibration loss (token-mean NLL) of the model with a set of sublayers removed. Every
 * search method and the `ppl` and `shapley` metrics are built on this one function, and "one
 * evaluation" everywhere means one call that actually runs the model over all calibration samples.
 * Results of plain drops are memoised by the dropped set, so searches that revisit a set (Shapley
 * permutations, greedy steps) pay once.
 */
import type { ModelSession } from '../engine/graph/model-session.ts';
import type { DropSpec } from '../engine/plan/plan.ts';
import { maskOf } from '../engine/plan/plan.ts';
import type { MeanNll } from './scoring.ts';
import { poolNll, scoreSequences } from './scoring.ts';
import type { ScoredSequence } from './sequences.ts';
import { countScoredTokens } from './sequences.ts';

export interface CalibrationLossOptions {
  maxBatchTokens?: number;
  signal?: AbortSignal;
  /** Called after each evaluation that ran the model. */
  onEvaluation?: (count: number) => void;
}

export class CalibrationLoss {
  readonly session: ModelSession;
  readonly samples: readonly ScoredSequence[];
  readonly numTokens: number;
  readonly #options: CalibrationLossOptions;
  readonly #memo = new Map<string, MeanNll>();
  #evaluations = 0;

  constructor(
    session: ModelSession,
    samples: readonly ScoredSequence[],
    options: CalibrationLossOptions = {},
  ) {
    this.session = session;
    this.samples = samples;
    this.numTokens = countScoredTokens(samples);
    this.#options = options;
  }

  /** Model runs over the calibration set so far (memo hits do not count). */
  get evaluations(): number {
    return this.#evaluations;
  }

  async evaluate(spec: DropSpec): Promise<MeanNll> {
    const key = spec.emulation ? undefined : `${[...spec.dropAttention].sort()}|${[...spec.dropMlp].sort()}`;
    const cached = key === undefined ? undefined : this.#memo.get(key);
    if (cached) return cached;
    const mask = maskOf(spec, this.session.config.numLayers);
    const scores = await scoreSequences(this.session, this.samples, mask, {
      maxBatchTokens: this.#options.maxBatchTokens,
      signal: this.#options.signal,
    });
    const result = poolNll(scores);
    this.#evaluations++;
    if (key !== undefined) this.#memo.set(key, result);
    this.#options.onEvaluation?.(this.#evaluations);
    return result;
  }

  /** Mean NLL only: the value function searches and Shapley use. */
  async meanNll(spec: DropSpec): Promise<number> {
    return (await this.evaluate(spec)).meanNll;
  }
}
