/**
 * One pass of the full model over the calibration samples with hidden_<k> outputs, reducing the
 * residual stream before (x_in) and after (x_out) every sublayer to per-sublayer statistics:
 *
 *   cosine   1 − mean cos(x_in, x_out)           (ShortGPT's Block Influence, LLM-Drop's score)
 *   angular  mean arccos(cos(x_in, x_out)) / π
 *   rel-l2   mean ‖x_out − x_in‖ / ‖x_in‖        (Siddiqui et al.'s relative L2 update norm)
 *
 * Means are over every position of every sample, BOS included. For sublayers asked for, it also
 * gathers UpdateStatistics (normed input, update) pairs for fitting emulations.
 */
import type { ModelSession } from '../engine/graph/model-session.ts';
import type { ModelWeights } from '../engine/model/weights.ts';
import { maskOf } from '../engine/plan/plan.ts';
import { runBatches } from './batches.ts';
import { addResidualPair, UpdateStatistics } from './emulation-fit.ts';
import type { ScoredSequence } from './sequences.ts';
import type { Sublayer, SublayerScores } from './sublayers.ts';
import { hiddenIndexAfter, sublayerName, sublayersOf } from './sublayers.ts';

export interface ResidualMetrics {
  cosine: SublayerScores;
  angular: SublayerScores;
  relL2: SublayerScores;
  /** Positions averaged over. */
  numTokens: number;
}

export interface ResidualPassOptions {
  /** Sublayers whose (normed input, update) statistics to gather, and whether with regression moments. */
  fitTargets?: { sublayer: Sublayer; withRegression: boolean }[];
  maxBatchTokens?: number;
  signal?: AbortSignal;
  onProgress?: (numSequences: number) => void;
}

export interface ResidualPass {
  metrics: ResidualMetrics;
  /** Keyed by sublayerName(). */
  updates: Map<string, UpdateStatistics>;
}

export async function residualPass(
  session: ModelSession,
  weights: ModelWeights,
  samples: readonly ScoredSequence[],
  options: ResidualPassOptions = {},
): Promise<ResidualPass> {
  const { numLayers: L, dim, rmsNormEps } = session.config;
  const sublayers = sublayersOf(L);
  const cosSum = new Float64Array(2 * L);
  const angleSum = new Float64Array(2 * L);
  const relSum = new Float64Array(2 * L);
  let numTokens = 0;
  const updates = new Map<string, UpdateStatistics>();
  const targets = (options.fitTargets ?? []).map(({ sublayer, withRegression }) => {
    const stats = new UpdateStatistics(dim, withRegression);
    updates.set(sublayerName(sublayer), stats);
    const layer = weights.layers[sublayer.layer]!;
    return {
      k: hiddenIndexAfter(sublayer),
      stats,
      norm: sublayer.kind === 'attention' ? layer.attnNorm : layer.mlpNorm,
    };
  });
  const scratch = { normed: new Float64Array(dim), delta: new Float64Array(dim) };

  await runBatches(
    session,
    samples.map((s) => s.tokens),
    maskOf({ dropAttention: [], dropMlp: [] }, L),
    { maxBatchTokens: options.maxBatchTokens, signal: options.signal, wantHiddenStates: true },
    (run) => {
      const hidden = run.hiddenStates!;
      run.rows.forEach((i, r) => {
        const length = samples[i]!.tokens.length;
        for (let s = 0; s < length; s++) {
          const offset = (r * run.seqLen + s) * dim;
          sublayers.forEach((sub, j) => {
            const k = hiddenIndexAfter(sub);
            const xIn = hidden[k - 1]!.subarray(offset, offset + dim);
            const xOut = hidden[k]!.subarray(offset, offset + dim);
            let dot = 0;
            let inSq = 0;
            let outSq = 0;
            let deltaSq = 0;
            for (let d = 0; d < dim; d++) {
              const a = xIn[d]!;
              const b = xOut[d]!;
              dot += a * b;
              inSq += a * a;
              outSq += b * b;
              deltaSq += (b - a) * (b - a);
            }
            // A zero vector has no direction: count it as unchanged when the update is zero too.
            const cos =
              inSq > 0 && outSq > 0
                ? Math.min(1, Math.max(-1, dot / Math.sqrt(inSq * outSq)))
                : deltaSq === 0
                  ? 1
                  : 0;
            cosSum[j] += cos;
            angleSum[j] += Math.acos(cos) / Math.PI;
            relSum[j] += inSq > 0 ? Math.sqrt(deltaSq / inSq) : deltaSq === 0 ? 0 : Number.POSITIVE_INFINITY;
          });
          for (const t of targets) {
            const xIn = hidden[t.k - 1]!.subarray(offset, offset + dim);
            const xOut = hidden[t.k]!.subarray(offset, offset + dim);
            addResidualPair(t.stats, xIn, xOut, t.norm, rmsNormEps, scratch);
          }
          numTokens++;
        }
      });
      options.onProgress?.(run.rows.length);
    },
  );

  const split = (sums: Float64Array, f: (mean: number) => number): SublayerScores => {
    const scores: SublayerScores = { attention: Array(L).fill(0), mlp: Array(L).fill(0) };
    sublayers.forEach((sub, j) => {
      scores[sub.kind][sub.layer] = f(sums[j]! / numTokens);
    });
    return scores;
  };
  return {
    metrics: {
      cosine: split(cosSum, (meanCos) => 1 - meanCos),
      angular: split(angleSum, (m) => m),
      relL2: split(relSum, (m) => m),
      numTokens,
    },
    updates,
  };
}
