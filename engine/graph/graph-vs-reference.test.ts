import { afterAll, describe, expect, it } from 'vitest';
import type { ModelConfig } from '../model/config.ts';
import type { SyntheticModelOptions } from '../model/synthetic.ts';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import { dropMask, fullMask } from '../reference/forward.ts';
import type { SublayerMask } from './io.ts';
import { ModelSession } from './model-session.ts';
import { compareDecode } from './testing/compare-decode.ts';

const PROMPT = [1, 17, 5, 42, 9, 33, 2];
const DECODE_STEPS = 20;
const TOLERANCE = 1e-4;

interface Shape {
  name: string;
  options: SyntheticModelOptions;
  ropeScaling?: ModelConfig['ropeScaling'];
}

const BASE = { numLayers: 3, vocabSize: 96, maxSeqLen: 64 } as const;

const SHAPES: Shape[] = [
  {
    name: 'MHA (GQA 1), head_dim 16, rotate-half, tied',
    options: { dim: 64, hiddenDim: 96, numHeads: 4, numKvHeads: 4 },
  },
  {
    name: 'GQA 2, head_dim 8, interleaved, q/k/v bias, untied',
    options: {
      dim: 32,
      hiddenDim: 80,
      numHeads: 4,
      numKvHeads: 2,
      ropeInterleaved: true,
      hasQkvBias: true,
      tieWordEmbeddings: false,
    },
  },
  {
    name: 'GQA 4, head_dim 64, rotate-half, untied',
    options: { dim: 96, hiddenDim: 128, numHeads: 8, numKvHeads: 2, headDim: 64, tieWordEmbeddings: false },
  },
  {
    name: 'GQA 2, head_dim 16, interleaved, q/k/v bias, tied',
    options: { dim: 64, hiddenDim: 96, numHeads: 4, numKvHeads: 2, ropeInterleaved: true, hasQkvBias: true },
  },
  {
    name: 'llama3 rope scaling, GQA 4, head_dim 16',
    options: { dim: 64, hiddenDim: 96, numHeads: 4, numKvHeads: 1, ropeTheta: 500000 },
    // a short "original context" so that scaled, smoothed and unscaled bands all occur within 16 dims
    ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 },
  },
];

const MASKS: [string, SublayerMask][] = [
  ['full', fullMask(3)],
  ['attention 1 dropped', dropMask(3, [1])],
  ['attention + MLP of layer 0 dropped', dropMask(3, [0], [0])],
  ['all attention dropped', dropMask(3, [0, 1, 2])],
  ['attention {0,2} and MLP 1 dropped', dropMask(3, [0, 2], [1])],
];

describe.each(SHAPES)('graph vs reference: $name', ({ options, ropeScaling }) => {
  const config: ModelConfig = { ...syntheticConfig({ ...BASE, ...options }), ropeScaling };
  const weights = syntheticWeights(config, 99);
  const sessionPromise = ModelSession.create(config, weights);
  afterAll(async () => (await sessionPromise).release());

  it.each(MASKS)(
    `prefill ${PROMPT.length} + ${DECODE_STEPS} decode steps, %s: max |Δlogit| ≤ ${TOLERANCE}`,
    async (_, mask) => {
      const result = await compareDecode(await sessionPromise, config, weights, {
        prompt: PROMPT,
        steps: DECODE_STEPS,
        mask,
      });
      expect(result.maxLogitDiff).toBeLessThanOrEqual(TOLERANCE);
      expect(result.graphPicks).toEqual(result.tokens);
    },
  );
});

describe('graph vs reference: the checks are not vacuous', () => {
  it('llama3 rope scaling changes the logits', async () => {
    const scaled = SHAPES.find((s) => s.ropeScaling)!;
    const unscaledConfig = syntheticConfig({ ...BASE, ...scaled.options });
    const config: ModelConfig = { ...unscaledConfig, ropeScaling: scaled.ropeScaling };
    const weights = syntheticWeights(config, 99);
    const session = await ModelSession.create(config, weights);
    try {
      const mask = fullMask(3);
      const against = (reference: ModelConfig) =>
        compareDecode(session, reference, weights, { prompt: PROMPT, steps: DECODE_STEPS, mask });
      expect((await against(config)).maxLogitDiff).toBeLessThanOrEqual(TOLERANCE);
      expect((await against(unscaledConfig)).maxLogitDiff).toBeGreaterThan(1e-2);
    } finally {
      await session.release();
    }
  });

  it('dropping a sublayer changes the logits (the comparison is not vacuous)', async () => {
    const config = syntheticConfig({ ...BASE, dim: 32, hiddenDim: 48, numHeads: 4, numKvHeads: 2 });
    const weights = syntheticWeights(config, 5);
    const session = await ModelSession.create(config, weights);
    try {
      const full = await compareDecode(session, config, weights, {
        prompt: PROMPT,
        steps: 2,
        mask: fullMask(3),
      });
      const dropped = await compareDecode(session, config, weights, {
        prompt: PROMPT,
        steps: 2,
        mask: dropMask(3, [1]),
      });
      expect(full.maxLogitDiff).toBeLessThanOrEqual(TOLERANCE);
      expect(dropped.maxLogitDiff).toBeLessThanOrEqual(TOLERANCE);
      // Scoring the full model's run against the dropped reference must fail.
      const crossed = await compareDecode(session, config, weights, {
        prompt: PROMPT,
        steps: 0,
        mask: fullMask(3),
        referenceMask: dropMask(3, [1]),
      });
      expect(crossed.maxLogitDiff).toBeGreaterThan(1e-2);
    } finally {
      await session.release();
    }
  });
});
