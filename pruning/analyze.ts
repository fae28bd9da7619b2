/**
 * `prune analyze`: one score per attention and MLP sublayer under a chosen metric, lower = more
 * redundant for every metric.
 *
 *   cosine, angular, rel-l2   residual-stream statistics of one full-model pass (residual-stats.ts)
 *   ppl                       calibration perplexity with only that sublayer removed (2L evaluations)
 *   shapley                   Monte-Carlo Shapley value of removing it, in nats of calibration loss,
 *                             over the game whose players are all 2L sublayers (shapley.ts)
 */
import { DropserveError } from '../engine/errors.ts';
import type { ModelWeights } from '../engine/model/weights.ts';
import type { CalibrationLoss } from './calibration-loss.ts';
import { residualPass } from './residual-stats.ts';
import type { MeanNll } from './scoring.ts';
import { shapleyValues } from './shapley.ts';
import type { Sublayer, SublayerKind, SublayerScores } from './sublayers.ts';
import { SUBLAYER_KINDS, sublayersOf, withRemoved } from './sublayers.ts';

export const METRICS = ['cosine', 'angular', 'rel-l2', 'ppl', 'shapley'] as const;
export type MetricName = (typeof METRICS)[number];

export const METRIC_DESCRIPTIONS: Record<MetricName, string> = {
  cosine: '1 − mean cos(x_in, x_out) of the residual stream around the sublayer',
  angular: 'mean arccos(cos(x_in, x_out)) / π',
  'rel-l2': 'mean ‖x_out − x_in‖ / ‖x_in‖',
  ppl: 'calibration perplexity with only this sublayer removed',
  shapley: 'Shapley value of removing it: mean increase in calibration NLL (nats) over random removal orders',
};

export function parseMetric(text: string): MetricName {
  if ((METRICS as readonly string[]).includes(text)) return text as MetricName;
  throw new DropserveError(
    'DS_INVALID_ARGUMENT',
    `unknown metric "${text}"; valid metrics: ${METRICS.join(', ')}`,
    {
      param: 'metric',
    },
  );
}

export interface AnalysisContext {
  loss: CalibrationLoss;
  weights: ModelWeights;
  signal?: AbortSignal;
  /** Progress in units of work done out of a total the metric announces first. */
  onProgress?: (done: number, total: number) => void;
}

export interface ShapleyAnalysisOptions {
  permutations: number;
  seed: number;
  /** Players of the game (default: both kinds). */
  kinds?: readonly SublayerKind[];
}

export interface Analysis {
  metric: MetricName;
  scores: SublayerScores;
  /** Calibration loss of the full model, where the metric evaluated it. */
  baseline?: MeanNll;
  /** Shapley only: standard errors, v(all removed), permutations walked. */
  shapley?: { standardErrors: SublayerScores; valueOfAll: number; permutations: number };
  /** Calibration-loss evaluations this analysis ran. */
  evaluations: number;
  /** Positions averaged over (residual metrics) or scored (loss-based metrics). */
  numTokens: number;
}

export async function analyzeSublayers(
  context: AnalysisContext,
  metric: MetricName,
  shapleyOptions: ShapleyAnalysisOptions = { permutations: 16, seed: 0 },
): Promise<Analysis> {
  const { loss } = context;
  const numLayers = loss.session.config.numLayers;
  const evaluationsBefore = loss.evaluations;
  const evaluations = () => loss.evaluations - evaluationsBefore;
  if (metric === 'cosine' || metric === 'angular' || metric === 'rel-l2') {
    let done = 0;
    const pass = await residualPass(loss.session, context.weights, loss.samples, {
      signal: context.signal,
      onProgress: (n) => context.onProgress?.((done += n), loss.samples.length),
    });
    const scores =
      metric === 'cosine'
        ? pass.metrics.cosine
        : metric === 'angular'
          ? pass.metrics.angular
          : pass.metrics.relL2;
    return { metric, scores, evaluations: 0, numTokens: pass.metrics.numTokens };
  }
  const none = { dropAttention: [], dropMlp: [] };
  if (metric === 'ppl') {
    const sublayers = sublayersOf(numLayers);
    const baseline = await loss.evaluate(none);
    const scores = emptyScores(numLayers);
    for (const [i, s] of sublayers.entries()) {
      scores[s.kind][s.layer] = (await loss.evaluate(withRemoved(none, [s]))).perplexity;
      context.onProgress?.(i + 1, sublayers.length);
    }
    return { metric, scores, baseline, evaluations: evaluations(), numTokens: loss.numTokens };
  }
  const players = sublayersOf(numLayers, shapleyOptions.kinds ?? SUBLAYER_KINDS);
  const result = await shapleyOf(context, players, shapleyOptions);
  const scores = emptyScores(numLayers);
  const standardErrors = emptyScores(numLayers);
  players.forEach((s, i) => {
    scores[s.kind][s.layer] = result.values[i]!;
    standardErrors[s.kind][s.layer] = result.standardErrors[i]!;
  });
  return {
    metric,
    scores,
    baseline: await loss.evaluate(none),
    shapley: { standardErrors, valueOfAll: result.valueOfAll, permutations: result.permutations },
    evaluations: evaluations(),
    numTokens: loss.numTokens,
  };
}

/** Shapley values of removing each of `players` (nats), with v = calibration mean NLL. */
export async function shapleyOf(
  context: AnalysisContext,
  players: readonly Sublayer[],
  options: ShapleyAnalysisOptions,
): Promise<Awaited<ReturnType<typeof shapleyValues>>> {
  const none = { dropAttention: [], dropMlp: [] };
  return shapleyValues(
    players.length,
    (removed) =>
      context.loss.meanNll(
        withRemoved(
          none,
          removed.map((i) => players[i]!),
        ),
      ),
    {
      permutations: options.permutations,
      seed: options.seed,
      signal: context.signal,
      onPermutation: context.onProgress,
    },
  );
}

/** Zero-filled per-layer scores. */
export function emptyScores(numLayers: number): SublayerScores {
  return { attention: Array(numLayers).fill(0), mlp: Array(numLayers).fill(0) };
}
