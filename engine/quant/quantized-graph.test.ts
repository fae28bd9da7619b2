/**
 * MatMulNBits / fp16 graphs against the TypeScript reference run on the weights the session really
 * multiplies by (dequantizedWeights): this checks the packing (nibble order, zero points, padding of
 * the last block), the node attributes, and that masks and emulations still work on quantized weights.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ModelSession } from '../graph/model-session.ts';
import { compareDecode } from '../graph/testing/compare-decode.ts';
import { SeededRandom } from '../model/random.ts';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import { dropMask, fullMask } from '../reference/forward.ts';
import type { WeightOptions } from './quantize-weights.ts';
import { applyWeightFormat, dequantizedWeights } from './quantize-weights.ts';

const PROMPT = [1, 17, 5, 42, 9, 33, 2];
const TOLERANCE = 1e-4;
// hiddenDim 80 is not a multiple of 32: down_proj's last block per row is padded
const config = syntheticConfig({
  dim: 64,
  hiddenDim: 80,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 96,
  maxSeqLen: 64,
  hasQkvBias: true,
});
const weights = syntheticWeights(config, 23);
const rng = new SeededRandom(3);

const emulatedMask = {
  ...dropMask(3, [1], [2]),
  emulation: {
    attention: [null, { kind: 'bias' as const, bias: rng.fillNormal(config.dim, 0.2) }, null],
    mlp: [
      null,
      null,
      {
        kind: 'lowrank' as const,
        rank: 2,
        down: rng.fillNormal(config.dim * 2, 0.1),
        up: rng.fillNormal(2 * config.dim, 0.5),
      },
    ],
  },
};

const MASKS = [
  ['full', fullMask(3)],
  ['attention 1 dropped', dropMask(3, [1])],
  ['attention 1 and MLP 2 emulated', emulatedMask],
] as const;

const FORMATS: [string, WeightOptions][] = [
  ['int8', { format: 'int8', blockSize: 32, quantizeLmHead: false }],
  ['int4 (zero points)', { format: 'int4', blockSize: 32, quantizeLmHead: false }],
  ['int4, block 16, lm_head quantized', { format: 'int4', blockSize: 16, quantizeLmHead: true }],
  ['int8, lm_head quantized', { format: 'int8', blockSize: 32, quantizeLmHead: true }],
  ['fp16, lm_head fp16', { format: 'fp16', blockSize: 32, quantizeLmHead: true }],
];

describe.each(FORMATS)('%s weights: graph vs reference on the dequantized weights', (_, options) => {
  const stored = applyWeightFormat(config, weights, options);
  const effective = dequantizedWeights(stored);
  // accuracy_level 0: the kernel dequantizes to float32, so the reference can match it to 1e-4
  const session = ModelSession.create(config, stored, { accuracyLevel: 0 });
  afterAll(async () => (await session).release());

  it.each(MASKS)(`%s: max |Δlogit| ≤ ${TOLERANCE} over prefill + 12 decode steps`, async (_, mask) => {
    const result = await compareDecode(await session, config, effective, { prompt: PROMPT, steps: 12, mask });
    expect(result.maxLogitDiff).toBeLessThanOrEqual(TOLERANCE);
    expect(result.graphPicks).toEqual(result.tokens);
  });

  it('the weights did change: against the float32 original the logits differ', async () => {
    const result = await compareDecode(await session, config, weights, {
      prompt: PROMPT,
      steps: 0,
      mask: fullMask(3),
    });
    expect(result.maxLogitDiff).toBeGreaterThan(TOLERANCE);
  });
});

describe('accuracy_level 4 (int8 activations, the CPU fast path)', () => {
  it.each([
    ['int8', 'int8'],
    ['int4', 'int4'],
  ] as const)(
    '%s: stays within rounding of the activations of the dequantized reference',
    async (_, format) => {
      const stored = applyWeightFormat(config, weights, { format, blockSize: 32, quantizeLmHead: false });
      const session = await ModelSession.create(config, stored, { accuracyLevel: 4 });
      try {
        const result = await compareDecode(session, config, dequantizedWeights(stored), {
          prompt: PROMPT,
          steps: 12,
          mask: fullMask(3),
        });
        // activations rounded to int8 per block (~1/254 of each block's range): measured 0.04–0.06 here,
        // against ~1e-6 at level 0; the bound leaves room for other CPUs' kernels
        expect(result.maxLogitDiff).toBeLessThanOrEqual(0.2);
        expect(result.maxLogitDiff).toBeGreaterThan(TOLERANCE);
      } finally {
        await session.release();
      }
    },
  );
});

describe('statically pruned graph on quantized weights', () => {
  it.each([
    ['int4', 'int4'],
    ['int8', 'int8'],
  ] as const)(
    '%s: attention 0 and MLP 1 absent from the graph, still equal to the reference',
    async (_, format) => {
      const stored = applyWeightFormat(config, weights, { format, blockSize: 32, quantizeLmHead: true });
      const mask = dropMask(3, [0], [1]);
      const pruned = await ModelSession.create(config, stored, { staticDrop: mask, accuracyLevel: 0 });
      try {
        const result = await compareDecode(pruned, config, dequantizedWeights(stored), {
          prompt: PROMPT,
          steps: 8,
          mask,
        });
        expect(result.maxLogitDiff).toBeLessThanOrEqual(TOLERANCE);
      } finally {
        await pruned.release();
      }
    },
  );
});
