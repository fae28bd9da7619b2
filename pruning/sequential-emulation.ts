/**
 * `prune plan --emulate bias|lowrank[:R]` with `--emulate-fit sequential` (the default): emulations
 * fitted inside the pruned network, one dropped sublayer at a time in depth order, in the spirit of
 * Siddiqui et al. ("A deeper look at depth pruning of LLMs", 2024), who train the replacement to
 * reproduce the block's effect inside the pruned network rather than in the full one.
 *
 * The calibration samples are split by sample (= by story for a document file): the first part fits,
 * the last part validates. For each dropped sublayer s, shallowest first:
 *   1. run the network with the drops above s in place (and the emulations kept for them so far),
 *      s and everything below it still running, and gather (normed x_in, update) pairs of s there;
 *   2. fit one candidate per ridge strength of a grid on those pairs;
 *   3. score every candidate, and the plain drop, by the validation NLL of the whole pruned network
 *      (all of the plan's drops, the emulations decided above s, s's candidate, plain drops below);
 *   4. keep the best candidate only if it beats the plain drop there — the gate; else s stays plain;
 *   5. refit a kept emulation on every sample with the chosen ridge (more data for the same
 *      decision; on stories260K it moves held-out perplexity the right way, docs/pruning-stories260K.md).
 * So a sublayer is emulated only where that lowered the validation loss at its point in the walk;
 * whether it also does on unseen text is what docs/pruning-stories260K.md measures.
 *
 * What is fitted (`target`): by default s's own update on the inputs it receives in the pruned
 * network, f_s(x̃) = hidden_k − hidden_{k−1} with the drops above s in place — the block's effect
 * inside the pruned network, a function of the token the emulation sees. The alternative 'stream'
 * regresses the full model's residual stream after s minus x̃, so the emulation also tries to undo
 * the damage of the drops above it; that damage comes from attention over other positions, which no
 * per-token map can see, and on stories260K it fits worse on held-out text (the report compares both).
 */
import type { Emulation, SublayerEmulation } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import type { ModelWeights } from '../engine/model/weights.ts';
import type { DropSpec, EmulationFile } from '../engine/plan/plan.ts';
import { maskOf } from '../engine/plan/plan.ts';
import { runBatches } from './batches.ts';
import { CalibrationLoss } from './calibration-loss.ts';
import { addResidualPair, fitBias, fitLowRank, UpdateStatistics } from './emulation-fit.ts';
import type { EmulationChoice, FittedEmulation } from './emulation-plan.ts';
import { emulationFileEntry } from './emulation-plan.ts';
import type { ScoredSequence } from './sequences.ts';
import type { Sublayer } from './sublayers.ts';
import { hiddenIndexAfter, removedSublayers, sublayerName } from './sublayers.ts';

export type EmulationFitMode = 'sequential' | 'full';
export const EMULATION_FIT_MODES: readonly EmulationFitMode[] = ['sequential', 'full'];

/**
 * Ridge strengths tried per sublayer. Low-rank: λ relative to the mean eigenvalue of the normed
 * inputs' covariance (emulation-fit.ts). Bias: the shrinkage ȳ / (1 + λ), from the mean update (0)
 * down to a fifth of it.
 */
export const RIDGE_GRIDS: Record<'bias' | 'lowrank', readonly number[]> = {
  bias: [0, 0.25, 1, 4],
  lowrank: [1e-4, 1e-3, 1e-2, 1e-1, 1, 10],
};

export type FitTarget = 'block' | 'stream';

export interface RidgeCandidate {
  ridge: number;
  validationNll: number;
  /** Low-rank only: explained variance of the fitted update on the fit tokens. */
  explainedVariance?: number;
}

export interface SublayerDecision {
  sublayer: Sublayer;
  /** Whether the gate kept the emulation (false: the sublayer is a plain drop). */
  kept: boolean;
  /** Ridge of the best candidate (kept or not). */
  ridge: number;
  /** Validation NLL of the pruned network with this sublayer dropped plainly… */
  validationNllPlain: number;
  /** …and with its best candidate emulation. */
  validationNllEmulated: number;
  candidates: RidgeCandidate[];
  fitTokens: number;
}

export interface SequentialFit extends FittedEmulation {
  decisions: SublayerDecision[];
  fitSamples: number;
  validationSamples: number;
  ridgeGrid: readonly number[];
  target: FitTarget;
  /** Whether kept emulations were refit on every calibration sample. */
  refit: boolean;
  /**
   * Validation NLL of the full model, of the plan with every drop plain, and of the plan with the
   * emulations returned (after a refit these have seen the validation samples too).
   */
  validationNll: { full: number; plain: number; emulated: number };
}

export interface SequentialFitOptions {
  /** Samples held back for validation, taken from the end (default: a quarter, at least 1). */
  validationSamples?: number;
  ridges?: readonly number[];
  target?: FitTarget;
  /**
   * Refit each kept emulation on every calibration sample (fit + validation) with the ridge the
   * validation chose, before the next sublayer is fitted (default true). The gate's figures stay
   * those of the fit-split model that earned the decision.
   */
  refit?: boolean;
  maxBatchTokens?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** The default validation share: a quarter of the samples, at least one. */
export function defaultValidationSamples(numSamples: number): number {
  return Math.max(1, Math.floor(numSamples / 4));
}

/** First samples fit, last `validationSamples` validate (whole samples, so whole stories). */
export function splitForValidation(
  samples: readonly ScoredSequence[],
  validationSamples = defaultValidationSamples(samples.length),
): { fit: readonly ScoredSequence[]; validation: readonly ScoredSequence[] } {
  if (samples.length < 2) {
    throw new RangeError(
      `a sequential emulation fit needs at least 2 calibration samples (fit + validation), got ${samples.length}`,
    );
  }
  if (
    !(Number.isInteger(validationSamples) && validationSamples >= 1 && validationSamples < samples.length)
  ) {
    throw new RangeError(
      `validation samples must be in 1..${samples.length - 1} (of ${samples.length} calibration samples), got ${validationSamples}`,
    );
  }
  const cut = samples.length - validationSamples;
  return { fit: samples.slice(0, cut), validation: samples.slice(cut) };
}

const emptyEmulation = (numLayers: number): Emulation => ({
  attention: Array(numLayers).fill(null),
  mlp: Array(numLayers).fill(null),
});

/** A new Emulation with one entry set (sessions cache feeds per Emulation object: never mutate one). */
function withEntry(base: Emulation, sublayer: Sublayer, entry: SublayerEmulation): Emulation {
  const next: Emulation = { attention: [...base.attention], mlp: [...base.mlp] };
  next[sublayer.kind][sublayer.layer] = entry;
  return next;
}

function dropsOf(sublayers: readonly Sublayer[]): DropSpec {
  const byDepth = (kind: Sublayer['kind']) =>
    sublayers
      .filter((s) => s.kind === kind)
      .map((s) => s.layer)
      .sort((a, b) => a - b);
  return { dropAttention: byDepth('attention'), dropMlp: byDepth('mlp') };
}

export async function fitEmulationSequentially(
  session: ModelSession,
  weights: ModelWeights,
  samples: readonly ScoredSequence[],
  spec: DropSpec,
  choice: Exclude<EmulationChoice, { kind: 'none' }>,
  options: SequentialFitOptions = {},
): Promise<SequentialFit> {
  const { numLayers, dim } = session.config;
  const { fit, validation } = splitForValidation(samples, options.validationSamples);
  const grid = options.ridges ?? RIDGE_GRIDS[choice.kind];
  if (grid.length === 0) throw new RangeError('the ridge grid is empty');
  const target = options.target ?? 'block';
  const refit = options.refit ?? true;
  const gatherOptions: GatherOptions = {
    withRegression: choice.kind === 'lowrank',
    target,
    maxBatchTokens: options.maxBatchTokens,
    signal: options.signal,
  };
  const order = removedSublayers(spec).sort((a, b) => hiddenIndexAfter(a) - hiddenIndexAfter(b));
  const allDrops = dropsOf(order);
  const validationLoss = new CalibrationLoss(session, validation, {
    maxBatchTokens: options.maxBatchTokens,
    signal: options.signal,
  });
  const total = 2 + order.length * (2 + grid.length + (refit ? 1 : 0));
  let done = 0;
  const step = () => options.onProgress?.(++done, total);

  const fullNll = (await validationLoss.evaluate({ dropAttention: [], dropMlp: [] })).meanNll;
  step();
  let decided = emptyEmulation(numLayers);
  const decisions: SublayerDecision[] = [];
  const explainedVariance: Record<string, number> = {};
  for (const [i, sublayer] of order.entries()) {
    // The drops above this sublayer, with what was kept for them: the inputs it will really get.
    const upstream: DropSpec = { ...dropsOf(order.slice(0, i)), emulation: decided };
    const stats = await gatherUpdates(session, weights, fit, upstream, sublayer, gatherOptions);
    step();
    const plainNll = (await validationLoss.evaluate({ ...allDrops, emulation: decided })).meanNll;
    step();
    const candidates: RidgeCandidate[] = [];
    let best: { entry: SublayerEmulation; candidate: RidgeCandidate } | undefined;
    for (const ridge of grid) {
      const { entry, explainedVariance: candidateVariance } = fitEntry(stats, choice, ridge);
      const trial = { ...allDrops, emulation: withEntry(decided, sublayer, entry) };
      const candidate: RidgeCandidate = {
        ridge,
        validationNll: (await validationLoss.evaluate(trial)).meanNll,
        ...(candidateVariance !== undefined ? { explainedVariance: candidateVariance } : {}),
      };
      step();
      candidates.push(candidate);
      if (!best || candidate.validationNll < best.candidate.validationNll) best = { entry, candidate };
    }
    const kept = best!.candidate.validationNll < plainNll;
    if (kept) {
      let chosen: FittedEntry = {
        entry: best!.entry,
        explainedVariance: best!.candidate.explainedVariance,
      };
      if (refit) {
        const allStats = await gatherUpdates(session, weights, samples, upstream, sublayer, gatherOptions);
        chosen = fitEntry(allStats, choice, best!.candidate.ridge);
      }
      decided = withEntry(decided, sublayer, chosen.entry);
      if (chosen.explainedVariance !== undefined)
        explainedVariance[sublayerName(sublayer)] = chosen.explainedVariance;
    }
    if (refit) step();
    decisions.push({
      sublayer,
      kept,
      ridge: best!.candidate.ridge,
      validationNllPlain: plainNll,
      validationNllEmulated: best!.candidate.validationNll,
      candidates,
      fitTokens: stats.count,
    });
  }
  const plainPlanNll = decisions[0]?.validationNllPlain ?? fullNll;
  const emulatedNll = (await validationLoss.evaluate({ ...allDrops, emulation: decided })).meanNll;
  step();
  const file: EmulationFile = { schema: 'dropserve.emulation', version: 1, dim, entries: [] };
  for (const sublayer of order) {
    const entry = decided[sublayer.kind][sublayer.layer];
    if (entry) file.entries.push(emulationFileEntry(sublayer, entry));
  }
  return {
    emulation: decided,
    file,
    explainedVariance,
    decisions,
    fitSamples: fit.length,
    validationSamples: validation.length,
    ridgeGrid: grid,
    target,
    refit,
    validationNll: { full: fullNll, plain: plainPlanNll, emulated: emulatedNll },
  };
}

interface FittedEntry {
  entry: SublayerEmulation;
  /** Low-rank only: explained variance on the tokens it was fitted on. */
  explainedVariance?: number;
}

function fitEntry(
  stats: UpdateStatistics,
  choice: Exclude<EmulationChoice, { kind: 'none' }>,
  ridge: number,
): FittedEntry {
  if (choice.kind === 'bias') return { entry: { kind: 'bias', bias: fitBias(stats, ridge) } };
  const fitted = fitLowRank(stats, choice.rank, ridge);
  return {
    entry: { kind: 'lowrank', bias: fitted.bias, down: fitted.down, up: fitted.up, rank: fitted.rank },
    explainedVariance: fitted.explainedVariance,
  };
}

export interface GatherOptions {
  withRegression: boolean;
  target: FitTarget;
  maxBatchTokens?: number;
  signal?: AbortSignal;
}

/**
 * (normed x_in, y) pairs of `sublayer` over every position of `samples`, x_in as the network with
 * `upstream` dropped delivers it. y is the sublayer's own update there ('block'), or the full
 * model's stream after the sublayer minus x_in ('stream').
 */
export async function gatherUpdates(
  session: ModelSession,
  weights: ModelWeights,
  samples: readonly ScoredSequence[],
  upstream: DropSpec,
  sublayer: Sublayer,
  options: GatherOptions,
): Promise<UpdateStatistics> {
  const { numLayers, dim, rmsNormEps } = session.config;
  const stats = new UpdateStatistics(dim, options.withRegression);
  const k = hiddenIndexAfter(sublayer);
  const layer = weights.layers[sublayer.layer]!;
  const norm = sublayer.kind === 'attention' ? layer.attnNorm : layer.mlpNorm;
  const scratch = { normed: new Float64Array(dim), delta: new Float64Array(dim) };
  const tokens = samples.map((s) => s.tokens);
  const batchOptions = {
    maxBatchTokens: options.maxBatchTokens,
    signal: options.signal,
    wantHiddenStates: true,
  };
  // 'stream': the full model's hidden_k of every sample first ([length, dim] each).
  const fullOut: Float32Array[] = [];
  if (options.target === 'stream') {
    await runBatches(
      session,
      tokens,
      maskOf({ dropAttention: [], dropMlp: [] }, numLayers),
      batchOptions,
      (run) => {
        run.rows.forEach((i, r) => {
          const start = r * run.seqLen * dim;
          fullOut[i] = run.hiddenStates![k]!.slice(start, start + tokens[i]!.length * dim);
        });
      },
    );
  }
  await runBatches(session, tokens, maskOf(upstream, numLayers), batchOptions, (run) => {
    const before = run.hiddenStates![k - 1]!;
    const after = run.hiddenStates![k]!;
    run.rows.forEach((i, r) => {
      for (let s = 0; s < tokens[i]!.length; s++) {
        const offset = (r * run.seqLen + s) * dim;
        const xOut =
          options.target === 'stream'
            ? fullOut[i]!.subarray(s * dim, (s + 1) * dim)
            : after.subarray(offset, offset + dim);
        addResidualPair(stats, before.subarray(offset, offset + dim), xOut, norm, rmsNormEps, scratch);
      }
    });
  });
  return stats;
}
