/**
 * `prune plan`'s methods: which K_attn attention and K_mlp MLP sublayers to drop.
 *
 *   cosine, angular, rel-l2  one-shot: rank each kind by the metric, drop its K lowest (LLM-Drop)
 *   joint                    one-shot cosine over attention and MLP together (LLM-Drop "joint"): drop
 *                            the K_attn + K_mlp lowest of either kind, so the split between kinds is
 *                            the metric's choice, not the flags'
 *   shapley                  Shapley values over the game whose players are the sublayers of the
 *                            kinds being dropped; drop each kind's K lowest
 *   ppl-greedy               BlockPruner's iterative search: each step, for every remaining
 *                            candidate, the calibration perplexity with it also removed; remove the
 *                            argmin; repeat. A kind leaves the candidate pool once its K is reached,
 *                            so attention-only search costs Σ_{k<K} (L − k) evaluations
 *
 * Ties go to attention before MLP, then to the lower layer.
 */
import { DropserveError } from '../engine/errors.ts';
import type { ModelWeights } from '../engine/model/weights.ts';
import type { DropSpec } from '../engine/plan/plan.ts';
import type { Analysis, AnalysisContext } from './analyze.ts';
import { analyzeSublayers, emptyScores, shapleyOf } from './analyze.ts';
import type { CalibrationLoss } from './calibration-loss.ts';
import type { Sublayer, SublayerKind, SublayerScores } from './sublayers.ts';
import { SUBLAYER_KINDS, scoreOf, sublayerName, sublayersOf, withRemoved } from './sublayers.ts';

export const METHODS = ['cosine', 'angular', 'rel-l2', 'ppl-greedy', 'shapley', 'joint'] as const;
export type MethodName = (typeof METHODS)[number];

export function parseMethod(text: string): MethodName {
  if ((METHODS as readonly string[]).includes(text)) return text as MethodName;
  throw new DropserveError(
    'DS_INVALID_ARGUMENT',
    `unknown method "${text}"; valid methods: ${METHODS.join(', ')}`,
    {
      param: 'method',
    },
  );
}

/** The metric a method ranks by, as recorded in plan provenance. */
export const METHOD_METRIC: Record<MethodName, string> = {
  cosine: 'cosine',
  angular: 'angular',
  'rel-l2': 'rel-l2',
  joint: 'cosine',
  shapley: 'shapley',
  'ppl-greedy': 'ppl',
};

export interface DropCounts {
  attention: number;
  mlp: number;
}

export interface GreedyStep {
  removed: Sublayer;
  meanNll: number;
  perplexity: number;
  /** Perplexity of every candidate tried at this step, by sublayer name. */
  candidates: Record<string, number>;
}

export interface Selection {
  method: MethodName;
  spec: DropSpec;
  /** The score table behind the choice; a kind the method did not score is absent. */
  scores: Partial<SublayerScores>;
  steps?: GreedyStep[];
  evaluations: number;
}

export interface SelectionContext extends AnalysisContext {
  loss: CalibrationLoss;
  weights: ModelWeights;
}

export interface SelectionOptions {
  permutations?: number;
  seed?: number;
}

export function checkDropCounts(counts: DropCounts, numLayers: number): void {
  for (const kind of SUBLAYER_KINDS) {
    const k = counts[kind];
    if (!(Number.isInteger(k) && k >= 0)) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--drop-${kind} must be a non-negative integer, got ${k}`,
      );
    }
    if (k > numLayers) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--drop-${kind} ${k} is larger than the model's ${numLayers} layers`,
        { param: `drop-${kind}` },
      );
    }
  }
}

export async function selectSublayers(
  context: SelectionContext,
  method: MethodName,
  counts: DropCounts,
  options: SelectionOptions = {},
): Promise<Selection> {
  const numLayers = context.loss.session.config.numLayers;
  checkDropCounts(counts, numLayers);
  const before = context.loss.evaluations;
  const none: DropSpec = { dropAttention: [], dropMlp: [] };
  const kinds = SUBLAYER_KINDS.filter((k) => counts[k] > 0);
  const finish = (spec: DropSpec, scores: Partial<SublayerScores>, steps?: GreedyStep[]): Selection => ({
    method,
    spec,
    scores,
    steps,
    evaluations: context.loss.evaluations - before,
  });
  if (kinds.length === 0) return finish(none, {});

  if (method === 'ppl-greedy') {
    const steps = await greedySearch(context, counts);
    return finish(
      withRemoved(
        none,
        steps.map((s) => s.removed),
      ),
      firstStepScores(steps, numLayers, kinds),
      steps,
    );
  }
  if (method === 'shapley') {
    const players = sublayersOf(numLayers, kinds);
    const result = await shapleyOf(context, players, {
      permutations: options.permutations ?? 16,
      seed: options.seed ?? 0,
    });
    const scores = emptyScores(numLayers);
    players.forEach((s, i) => {
      scores[s.kind][s.layer] = result.values[i]!;
    });
    return finish(lowestPerKind(scores, counts), pick(scores, kinds));
  }
  const metric = method === 'joint' ? 'cosine' : method;
  const analysis: Analysis = await analyzeSublayers(context, metric);
  if (method === 'joint') {
    const chosen = rankLowest(analysis.scores, sublayersOf(numLayers)).slice(
      0,
      counts.attention + counts.mlp,
    );
    return finish(withRemoved(none, chosen), analysis.scores);
  }
  return finish(lowestPerKind(analysis.scores, counts), analysis.scores);
}

/** Candidates sorted by score, ties by kind (attention first) then layer. */
export function rankLowest(scores: SublayerScores, candidates: readonly Sublayer[]): Sublayer[] {
  return [...candidates].sort(
    (a, b) =>
      scoreOf(scores, a) - scoreOf(scores, b) ||
      SUBLAYER_KINDS.indexOf(a.kind) - SUBLAYER_KINDS.indexOf(b.kind) ||
      a.layer - b.layer,
  );
}

/** Each kind's K lowest-scored layers. */
export function lowestPerKind(scores: SublayerScores, counts: DropCounts): DropSpec {
  const numLayers = scores.attention.length;
  const chosen = SUBLAYER_KINDS.flatMap((kind) =>
    rankLowest(scores, sublayersOf(numLayers, [kind])).slice(0, counts[kind]),
  );
  return withRemoved({ dropAttention: [], dropMlp: [] }, chosen);
}

async function greedySearch(context: SelectionContext, counts: DropCounts): Promise<GreedyStep[]> {
  const { loss } = context;
  const numLayers = loss.session.config.numLayers;
  const total = counts.attention + counts.mlp;
  let spec: DropSpec = { dropAttention: [], dropMlp: [] };
  const steps: GreedyStep[] = [];
  // Candidates in tie-break order: attention before MLP, then by layer.
  const remaining = SUBLAYER_KINDS.filter((k) => counts[k] > 0).flatMap((kind) =>
    sublayersOf(numLayers, [kind]),
  );
  // Σ_k (candidates left at step k); exact when one kind is searched, an upper bound with both.
  let plannedEvaluations = 0;
  for (let k = 0; k < total; k++) plannedEvaluations += remaining.length - k;
  let done = 0;
  for (let k = 0; k < total; k++) {
    const taken = { attention: spec.dropAttention.length, mlp: spec.dropMlp.length };
    const candidates = remaining.filter((s) => taken[s.kind] < counts[s.kind]);
    let best: { sublayer: Sublayer; meanNll: number; perplexity: number } | null = null;
    const tried: Record<string, number> = {};
    for (const candidate of candidates) {
      const result = await loss.evaluate(withRemoved(spec, [candidate]));
      tried[sublayerName(candidate)] = result.perplexity;
      context.onProgress?.(++done, plannedEvaluations);
      if (!best || result.meanNll < best.meanNll) best = { sublayer: candidate, ...result };
    }
    spec = withRemoved(spec, [best!.sublayer]);
    remaining.splice(remaining.indexOf(best!.sublayer), 1);
    steps.push({
      removed: best!.sublayer,
      meanNll: best!.meanNll,
      perplexity: best!.perplexity,
      candidates: tried,
    });
  }
  context.onProgress?.(plannedEvaluations, plannedEvaluations);
  return steps;
}

/** The first greedy step tried every candidate alone: that is the one-shot ppl table. */
function firstStepScores(
  steps: GreedyStep[],
  numLayers: number,
  kinds: readonly SublayerKind[],
): Partial<SublayerScores> {
  const first = steps[0]?.candidates ?? {};
  const scores: Partial<SublayerScores> = {};
  for (const kind of kinds) {
    scores[kind] = sublayersOf(numLayers, [kind]).map((s) => first[sublayerName(s)]!);
  }
  return scores;
}

function pick(scores: SublayerScores, kinds: readonly SublayerKind[]): Partial<SublayerScores> {
  const out: Partial<SublayerScores> = {};
  for (const kind of kinds) out[kind] = scores[kind];
  return out;
}
