import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type SamplingParams } from '../client.ts';
import { logSoftmax } from './log-softmax.ts';
import { createSamplerState, sampleToken } from './sampler.ts';

const logits = Float32Array.from([2.0, 1.0, 0.5, 0.1, -1, -3, 3.0, 0]);
const params = (p: Partial<SamplingParams>): SamplingParams => ({ ...DEFAULT_SAMPLING, ...p });

function draws(p: SamplingParams, n: number): number[] {
  const state = createSamplerState(p, []);
  // Penalties off here, so the state's counts don't change the distribution between draws.
  return Array.from({ length: n }, () => sampleToken(logits, p, state).tokenId);
}

describe('sampleToken', () => {
  it('temperature 0 is argmax', () => {
    expect(draws(params({ temperature: 0 }), 5)).toEqual([6, 6, 6, 6, 6]);
  });

  it('the same seed reproduces the same draws; another seed differs', () => {
    const a = draws(params({ seed: 42 }), 50);
    expect(draws(params({ seed: 42 }), 50)).toEqual(a);
    expect(draws(params({ seed: 43 }), 50)).not.toEqual(a);
  });

  it('top-k keeps only the k most likely tokens', () => {
    const seen = new Set(draws(params({ seed: 1, topK: 2, temperature: 5 }), 300));
    expect([...seen].sort()).toEqual([0, 6]);
  });

  it('top-p keeps the smallest set whose mass reaches p', () => {
    const p = logSoftmax(logits).map(Math.exp);
    // Sorted: 6 (p≈0.54), 0 (≈0.20), 1 (≈0.07)...: top_p 0.7 keeps {6, 0}.
    expect(p[6]! + p[0]!).toBeGreaterThan(0.7);
    expect(p[6]!).toBeLessThan(0.7);
    const seen = new Set(draws(params({ seed: 3, topP: 0.7 }), 400));
    expect([...seen].sort()).toEqual([0, 6]);
  });

  it('min-p drops tokens below min_p × the top probability', () => {
    const seen = new Set(draws(params({ seed: 5, minP: 0.2 }), 400));
    // p(0)/p(6) = e^-1 ≈ 0.37 stays; p(1)/p(6) = e^-2 ≈ 0.135 goes.
    expect([...seen].sort()).toEqual([0, 6]);
  });

  it('frequency penalty discourages repeats; logprobs come from the raw distribution', () => {
    const p = params({ temperature: 0, frequencyPenalty: 2 });
    const state = createSamplerState(p, []);
    const first = sampleToken(logits, p, state, { topLogprobs: 3 });
    const second = sampleToken(logits, p, state);
    expect(first.tokenId).toBe(6);
    expect(second.tokenId).toBe(0);
    const raw = logSoftmax(logits);
    expect(first.logprob).toBeCloseTo(raw[6]!, 6);
    expect(first.topLogprobs!.map((t) => t.tokenId)).toEqual([6, 0, 1]);
  });
});
