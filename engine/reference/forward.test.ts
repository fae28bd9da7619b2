import { describe, expect, it } from 'vitest';
import type { SublayerMask } from '../graph/io.ts';
import { syntheticConfig, syntheticWeights } from '../model/synthetic.ts';
import type { LayerWeights, ModelWeights } from '../model/weights.ts';
import { dropMask, fullMask, ReferenceModel } from './forward.ts';
import { rmsNorm } from './ops.ts';
import { applyRope } from './rope.ts';

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe('reference building blocks', () => {
  it('rmsNorm divides by the root mean square and scales', () => {
    // rms of [3, 4] = sqrt(12.5)
    const out = rmsNorm(Float64Array.of(3, 4), Float32Array.of(1, 2), 0);
    expect(out[0]).toBeCloseTo(3 / Math.sqrt(12.5), 12);
    expect(out[1]).toBeCloseTo((2 * 4) / Math.sqrt(12.5), 12);
  });

  it('rope conventions are the same rotation on differently paired coordinates', () => {
    const headDim = 8;
    const invFreq = Float64Array.from({ length: 4 }, (_, i) => 10000 ** (-(2 * i) / headDim));
    const x = Float64Array.from({ length: 2 * headDim }, (_, i) => Math.sin(i + 1));
    // halves layout [a0..a3, b0..b3] ⇔ interleaved layout [a0, b0, a1, b1, ...]
    const toInterleaved = (v: Float64Array) =>
      Float64Array.from(v, (_, j) => {
        const head = Math.floor(j / headDim);
        const k = j % headDim;
        return v[head * headDim + (k % 2 === 0 ? k / 2 : headDim / 2 + (k - 1) / 2)]!;
      });
    const halves = Float64Array.from(x);
    const interleaved = toInterleaved(x);
    applyRope(halves, 2, headDim, 5, invFreq, false);
    applyRope(interleaved, 2, headDim, 5, invFreq, true);
    expect(maxDiff(toInterleaved(halves), interleaved)).toBeLessThan(1e-12);
    // a rotation: norms kept, and position 0 changes nothing
    const norm = (v: Float64Array) => Math.hypot(...v);
    expect(norm(halves)).toBeCloseTo(norm(x), 12);
    expect(halves[1]).not.toBeCloseTo(x[1]!, 3);
    const atZero = Float64Array.from(x);
    applyRope(atZero, 2, headDim, 0, invFreq, true);
    expect(maxDiff(atZero, x)).toBe(0);
  });
});

describe('ReferenceModel', () => {
  const config = syntheticConfig({
    dim: 32,
    hiddenDim: 48,
    numLayers: 3,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: 64,
  });
  const weights = syntheticWeights(config, 11);
  const tokens = [1, 7, 3, 40, 9, 22];

  it('continues from its cache: one call over six tokens equals three calls of two', () => {
    const whole = new ReferenceModel(config, weights).forward(tokens, fullMask(3));
    const split = new ReferenceModel(config, weights);
    const parts = [0, 2, 4].flatMap((i) => split.forward(tokens.slice(i, i + 2), fullMask(3)));
    expect(split.numPositions).toBe(6);
    parts.forEach((logits, i) => {
      expect(maxDiff(logits, whole[i]!)).toBeLessThan(1e-9);
    });
  });

  it('keeps no KV for dropped attention layers and one row per position for kept ones', () => {
    const model = new ReferenceModel(config, weights);
    model.forward(tokens, dropMask(3, [1]));
    expect(model.kvCache(1)).toBeNull();
    expect(model.kvCache(0)!.keys).toHaveLength(6);
    expect(model.kvCache(2)!.values).toHaveLength(6);
    expect(() => model.forward([5], fullMask(3))).toThrow(/mask changed/);
    model.reset();
    expect(() => model.forward([5], fullMask(3))).not.toThrow();
  });

  it('numbers hidden states as io.ts does; a dropped sublayer passes the stream through', () => {
    const model = new ReferenceModel(config, weights);
    model.forward(tokens, dropMask(3, [1], [2]));
    const h = model.hiddenStates;
    expect(h).toHaveLength(7);
    expect(h[0]!.subarray(0, 32)).toEqual(weights.tokenEmbedding.subarray(32, 64)); // token 1
    expect(maxDiff(h[3]!, h[2]!)).toBe(0); // attention 1 dropped
    expect(maxDiff(h[6]!, h[5]!)).toBe(0); // MLP 2 dropped
    expect(maxDiff(h[1]!, h[0]!)).toBeGreaterThan(1e-3); // attention 0 kept
  });

  it('emulates: a zero bias is a plain drop; a bias adds itself; low-rank adds (norm(x)·down)·up', () => {
    const dim = config.dim;
    const bias = Float32Array.from({ length: dim }, (_, i) => 0.01 * i);
    const down = Float32Array.from({ length: dim * 2 }, (_, i) => Math.cos(i) / dim);
    const up = Float32Array.from({ length: 2 * dim }, (_, i) => Math.sin(i));
    const withEmulation = (emulation: SublayerMask['emulation']): SublayerMask => ({
      ...dropMask(3, [1], [0]),
      emulation,
    });
    const run = (mask: SublayerMask) => {
      const model = new ReferenceModel(config, weights);
      const logits = model.forward(tokens.slice(0, 2), mask);
      return { logits, hidden: model.hiddenStates };
    };
    const plain = run(dropMask(3, [1], [0]));
    const zero = run(
      withEmulation({
        attention: [null, { kind: 'bias', bias: new Float32Array(dim) }, null],
        mlp: [null, null, null],
      }),
    );
    expect(maxDiff(zero.logits[1]!, plain.logits[1]!)).toBe(0);

    const biased = run(
      withEmulation({ attention: [null, { kind: 'bias', bias }, null], mlp: [null, null, null] }),
    );
    const shift = Float32Array.from(biased.hidden[3]!, (v, i) => v - biased.hidden[2]![i]!);
    expect(maxDiff(shift, [...bias, ...bias])).toBeLessThan(1e-6);

    const lowRank = run(
      withEmulation({
        attention: [null, null, null],
        mlp: [{ kind: 'lowrank', down, up, rank: 2 }, null, null],
      }),
    );
    const x = Float64Array.from(lowRank.hidden[1]!.subarray(0, dim)); // stream entering MLP 0, position 0
    const n = rmsNorm(x, weights.layers[0]!.mlpNorm, config.rmsNormEps);
    const low = [0, 1].map((j) => n.reduce((sum, v, i) => sum + v * down[i * 2 + j]!, 0));
    const expected = x.map((v, i) => v + low[0]! * up[i]! + low[1]! * up[dim + i]!);
    expect(maxDiff(lowRank.hidden[2]!.subarray(0, dim), expected)).toBeLessThan(1e-5);
  });

  it('shares each KV head among its query heads (GQA equals MHA with K/V heads repeated)', () => {
    const headDim = config.headDim;
    const mhaConfig = { ...config, numKvHeads: config.numHeads };
    const repeatHeads = (w: Float32Array) => {
      // [kvH·D, dim] → [H·D, dim]: query head h reads KV head ⌊h / 2⌋
      const rowLen = config.dim * headDim;
      const out = new Float32Array(config.numHeads * rowLen);
      for (let h = 0; h < config.numHeads; h++)
        out.set(w.subarray(Math.floor(h / 2) * rowLen, (Math.floor(h / 2) + 1) * rowLen), h * rowLen);
      return out;
    };
    const mhaWeights: ModelWeights = {
      ...weights,
      layers: weights.layers.map(
        (l): LayerWeights => ({ ...l, wk: repeatHeads(l.wk), wv: repeatHeads(l.wv) }),
      ),
    };
    const gqa = new ReferenceModel(config, weights).forward(tokens, fullMask(3));
    const mha = new ReferenceModel(mhaConfig, mhaWeights).forward(tokens, fullMask(3));
    gqa.forEach((logits, i) => {
      expect(maxDiff(logits, mha[i]!)).toBeLessThan(1e-9);
    });
  });
});
