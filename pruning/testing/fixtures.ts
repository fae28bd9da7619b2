/**
 * Test fixtures: tiny synthetic models whose redundant sublayers are known by construction, and
 * calibration data sampled from the model itself (so the full model is the true distribution of its
 * data, and removing any sublayer that does something raises the expected loss).
 */
import type { ModelSession } from '../../engine/graph/model-session.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import { SeededRandom } from '../../engine/model/random.ts';
import { syntheticModel } from '../../engine/model/synthetic.ts';
import { maskOf } from '../../engine/plan/plan.ts';
import type { ScoredSequence } from '../sequences.ts';

export const TINY_SHAPE = {
  dim: 32,
  hiddenDim: 64,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 8,
  vocabSize: 64,
  maxSeqLen: 64,
} as const;

export interface NoOpSublayers {
  /** Attention layers whose output projection is zeroed: their update is exactly 0. */
  attention?: number[];
  /** MLP layers whose down projection is zeroed. */
  mlp?: number[];
}

export function tinyModel(noOps: NoOpSublayers = {}, seed = 7): LoadedModel {
  const model = syntheticModel({ ...TINY_SHAPE, seed });
  for (const l of noOps.attention ?? []) model.weights.layers[l]!.wo.fill(0);
  for (const l of noOps.mlp ?? []) model.weights.layers[l]!.wDown.fill(0);
  return model;
}

/**
 * `numRows` sequences of BOS + `length − 1` tokens sampled at temperature 1 from the full model
 * (each step reruns the whole prefix: fine at these sizes).
 */
export async function sampleFromModel(
  session: ModelSession,
  numRows: number,
  length: number,
  seed = 1,
): Promise<ScoredSequence[]> {
  const { numLayers, vocabSize, bosTokenId } = session.config;
  const rng = new SeededRandom(seed);
  const rows = Array.from({ length: numRows }, () => [bosTokenId]);
  const mask = maskOf({ dropAttention: [], dropMlp: [] }, numLayers);
  const emptyPast = { key: new Float32Array(0), value: new Float32Array(0) };
  for (let s = 1; s < length; s++) {
    const output = await session.run({
      batchSize: numRows,
      seqLen: s,
      inputIds: rows.flat(),
      positionIds: rows.flatMap(() => Array.from({ length: s }, (_, i) => i)),
      mask,
      pastLengths: rows.map(() => 0),
      past: mask.attnKeep.map(() => emptyPast),
      pastCapacity: 0,
      logitsIndex: rows.map((_, r) => r * s + s - 1),
    });
    rows.forEach((row, r) => {
      row.push(sampleToken(output.logits.subarray(r * vocabSize, (r + 1) * vocabSize), rng));
    });
  }
  return rows.map((tokens) => ({ tokens, firstScored: 1 }));
}

function sampleToken(logits: Float32Array, rng: SeededRandom): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  let u = rng.next() * sum;
  for (let i = 0; i < logits.length; i++) {
    u -= Math.exp(logits[i]! - max);
    if (u <= 0) return i;
  }
  return logits.length - 1;
}
