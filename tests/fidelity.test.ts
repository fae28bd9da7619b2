import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING } from '../engine/client.ts';
import { createEngine, type InProcessEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import { type FinishedGeneration, ShadowScorer } from '../server/fidelity/shadow-scorer.ts';
import { STORIES_260K } from './support/shared-assets.ts';

const PROMPTS = [
  'Once upon a time',
  'Lily and Tom went to the park.',
  'The cat saw a big dog',
  'One day, a little bird',
];

async function generation(
  engine: InProcessEngine,
  variant: string,
  prompt: string,
  id: string,
): Promise<FinishedGeneration> {
  const promptTokenIds = engine.tokenizer.encode(prompt, { addBos: true });
  const completionTokenIds: number[] = [];
  const distributions: Float32Array[] = [];
  for await (const event of engine.generate({
    requestId: id,
    variant,
    promptTokenIds,
    maxTokens: 48,
    sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
    recordDistributions: true,
  })) {
    if (event.type === 'token') {
      completionTokenIds.push(event.tokenId);
      distributions.push(event.distribution!);
    }
  }
  return { variant, promptTokenIds, completionTokenIds, distributions };
}

describe('live fidelity (shadow scoring) on stories260K', () => {
  let engine: InProcessEngine;
  let scorer: ShadowScorer;
  beforeAll(async () => {
    engine = await createEngine({
      model: await loadModel({ model: STORIES_260K }),
      servedModelName: 'stories260K',
      variants: [{ name: 'attn-2', spec: { dropAttention: [1, 3], dropMlp: [] } }],
    });
    scorer = new ShadowScorer({ engine, rate: 1 });
  });
  afterAll(() => engine.close());

  it('the full model scored against itself agrees everywhere with KL 0', async () => {
    for (const [i, prompt] of PROMPTS.entries()) {
      const result = await scorer.submit(await generation(engine, 'stories260K', prompt, `full-${i}`));
      expect(result!.positions).toBeGreaterThan(10);
      expect(result!.agreement).toBe(1);
      expect(result!.klMean).toBeLessThan(1e-5);
      expect(result!.deltaNllMean).toBeLessThan(1e-5);
    }
  });

  it('a variant with attention layers dropped disagrees sometimes, with KL > 0', async () => {
    for (const [i, prompt] of PROMPTS.entries()) {
      await scorer.submit(await generation(engine, 'stories260K:attn-2', prompt, `pruned-${i}`));
    }
    const fidelity = scorer.fidelity('stories260K:attn-2');
    expect(fidelity.samples).toBe(PROMPTS.length);
    expect(fidelity.agreement).toBeLessThan(1);
    expect(fidelity.agreement).toBeGreaterThan(0);
    expect(fidelity.klMean).toBeGreaterThan(0.01);
    expect(fidelity.deltaNllMean).toBeGreaterThan(0);
  });

  it('samples at the configured rate and never samples the full model', () => {
    let draws = 0;
    const sampler = new ShadowScorer({ engine, rate: 0.25, random: () => (draws++ * 0.37) % 1 });
    const picked = Array.from({ length: 400 }, () => sampler.shouldSample('stories260K:attn-2')).filter(
      Boolean,
    ).length;
    expect(picked).toBeGreaterThan(60);
    expect(picked).toBeLessThan(140);
    expect(sampler.shouldSample('stories260K')).toBe(false);
  });
});
