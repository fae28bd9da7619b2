/**
 * Metrics and search methods on tiny synthetic models whose redundant sublayer is known by
 * construction: a zeroed output projection makes an attention sublayer an exact no-op, a zeroed
 * down projection does the same to an MLP.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelSession } from '../engine/graph/model-session.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { analyzeSublayers, parseMetric } from './analyze.ts';
import { CalibrationLoss } from './calibration-loss.ts';
import { parseMethod, selectSublayers } from './select.ts';
import type { ScoredSequence } from './sequences.ts';
import { sampleFromModel, tinyModel } from './testing/fixtures.ts';

const NOOP_ATTENTION = 2;
const NOOP_MLP = 1;

let model: LoadedModel;
let session: ModelSession;
let samples: ScoredSequence[];
let loss: CalibrationLoss;

beforeAll(async () => {
  model = tinyModel({ attention: [NOOP_ATTENTION], mlp: [NOOP_MLP] });
  session = await ModelSession.create(model.config, model.weights, { outputHiddenStates: true });
  samples = await sampleFromModel(session, 12, 40);
  loss = new CalibrationLoss(session, samples);
});
afterAll(async () => {
  await session.release();
});

describe('residual metrics', () => {
  for (const metric of ['cosine', 'angular', 'rel-l2'] as const) {
    it(`${metric}: a no-op sublayer scores 0 and ranks first of its kind`, async () => {
      const { scores, numTokens } = await analyzeSublayers({ loss, weights: model.weights }, metric);
      expect(numTokens).toBe(12 * 40);
      expect(scores.attention[NOOP_ATTENTION]).toBeCloseTo(0, 6);
      expect(scores.mlp[NOOP_MLP]).toBeCloseTo(0, 6);
      for (const kind of ['attention', 'mlp'] as const) {
        const noOp = kind === 'attention' ? NOOP_ATTENTION : NOOP_MLP;
        scores[kind].forEach((score, l) => {
          if (l !== noOp) expect(score).toBeGreaterThan(1e-3);
        });
      }
      const selection = await selectSublayers({ loss, weights: model.weights }, metric, {
        attention: 1,
        mlp: 1,
      });
      expect(selection.spec.dropAttention).toEqual([NOOP_ATTENTION]);
      expect(selection.spec.dropMlp).toEqual([NOOP_MLP]);
      expect(selection.evaluations).toBe(0);
    });
  }

  it('joint ranks both kinds together: the two no-ops are its two lowest', async () => {
    const selection = await selectSublayers({ loss, weights: model.weights }, 'joint', {
      attention: 2,
      mlp: 0,
    });
    expect(selection.spec).toEqual({
      dropAttention: [NOOP_ATTENTION],
      dropMlp: [NOOP_MLP],
      emulation: undefined,
    });
  });
});

describe('loss-based metrics', () => {
  it('ppl: removing a no-op leaves calibration perplexity unchanged, anything else raises it', async () => {
    const { scores, baseline } = await analyzeSublayers({ loss, weights: model.weights }, 'ppl');
    expect(scores.attention[NOOP_ATTENTION]).toBe(baseline!.perplexity);
    expect(scores.mlp[NOOP_MLP]).toBe(baseline!.perplexity);
    scores.attention.forEach((p, l) => {
      if (l !== NOOP_ATTENTION) expect(p).toBeGreaterThan(baseline!.perplexity);
    });
  });

  it('ppl-greedy removes the no-op first, then searches the rest: Σ(L − k) evaluations', async () => {
    const fresh = new CalibrationLoss(session, samples); // no memo: count every evaluation
    const selection = await selectSublayers({ loss: fresh, weights: model.weights }, 'ppl-greedy', {
      attention: 2,
      mlp: 0,
    });
    expect(selection.steps![0]!.removed).toEqual({ kind: 'attention', layer: NOOP_ATTENTION });
    expect(selection.spec.dropAttention).toContain(NOOP_ATTENTION);
    expect(selection.spec.dropAttention).toHaveLength(2);
    expect(selection.evaluations).toBe(4 + 3);
    // The second step's winner is the candidate with the lowest perplexity at that step.
    const second = selection.steps![1]!;
    expect(Math.min(...Object.values(second.candidates))).toBe(second.perplexity);
  });

  it('shapley: values sum to v(all removed) − v(none), and a no-op is worth exactly 0', async () => {
    const { scores, shapley, baseline } = await analyzeSublayers(
      { loss, weights: model.weights },
      'shapley',
      {
        permutations: 6,
        seed: 3,
      },
    );
    const total = [...scores.attention, ...scores.mlp].reduce((a, b) => a + b, 0);
    expect(total).toBeCloseTo(shapley!.valueOfAll - baseline!.meanNll, 10);
    expect(scores.attention[NOOP_ATTENTION]).toBe(0);
    expect(scores.mlp[NOOP_MLP]).toBe(0);
    const selection = await selectSublayers(
      { loss, weights: model.weights },
      'shapley',
      { attention: 1, mlp: 1 },
      {
        permutations: 4,
      },
    );
    expect(selection.spec.dropAttention).toEqual([NOOP_ATTENTION]);
    expect(selection.spec.dropMlp).toEqual([NOOP_MLP]);
  });
});

describe('bad input', () => {
  it('names the valid metrics and methods', () => {
    expect(() => parseMetric('entropy')).toThrow(
      /unknown metric "entropy"; valid metrics: cosine, angular, rel-l2, ppl, shapley/,
    );
    expect(() => parseMethod('random')).toThrow(
      /valid methods: cosine, angular, rel-l2, ppl-greedy, shapley, joint/,
    );
  });

  it('refuses to drop more layers than the model has', async () => {
    await expect(
      selectSublayers({ loss, weights: model.weights }, 'cosine', { attention: 5, mlp: 0 }),
    ).rejects.toThrow(/--drop-attention 5 is larger than the model's 4 layers/);
  });
});
