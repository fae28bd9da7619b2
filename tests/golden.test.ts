import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING } from '../engine/client.ts';
import { createEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { generatedTokenIds } from '../engine/output/token-ids.ts';
import { maskOf } from '../engine/plan/plan.ts';
import { ReferenceModel } from '../engine/reference/forward.ts';
import { argmax } from '../engine/sampling/log-softmax.ts';
import { greedyRun } from './support/greedy-run.ts';
import { describeWithAssets, STORIES_260K, TINYSTORIES_656K } from './support/shared-assets.ts';

/** The checkpoint that ships in the repository as the built-in default. */
const STORIES = STORIES_260K;
const TINYSTORIES_HF = TINYSTORIES_656K.path;

/** Greedy continuation by the plain TypeScript reference, stopping at EOS like the engine. */
function referenceGreedy(
  model: LoadedModel,
  prompt: number[],
  maxTokens: number,
  dropAttention: number[],
): number[] {
  const reference = new ReferenceModel(model.config, model.weights);
  const mask = maskOf({ dropAttention, dropMlp: [] }, model.config.numLayers);
  let logits = reference.forward(prompt, mask).at(-1)!;
  const out: number[] = [];
  while (out.length < maxTokens) {
    const next = argmax(logits);
    if (model.config.eosTokenIds.includes(next)) break;
    out.push(next);
    logits = reference.forward([next], mask).at(-1)!;
  }
  return out;
}

async function engineGreedy(
  model: LoadedModel,
  prompt: number[],
  maxTokens: number,
  dropAttention: number[],
) {
  const engine = await createEngine({
    model,
    servedModelName: 'm',
    variants: [{ name: 'pruned', spec: { dropAttention, dropMlp: [] } }],
  });
  try {
    return await generatedTokenIds(
      engine.generate({
        requestId: 'golden',
        variant: dropAttention.length > 0 ? 'm:pruned' : 'm',
        promptTokenIds: prompt,
        maxTokens,
        sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
      }),
    );
  } finally {
    await engine.close();
  }
}

describe('stories260K (llama2.c checkpoint, interleaved RoPE)', () => {
  it('greedy from "Once upon a time" is the known llama2.c text and equals the reference token for token', async () => {
    const model = await loadModel({ model: STORIES });
    const prompt = model.tokenizer.encode('Once upon a time', { addBos: true });
    expect(prompt).toEqual([1, 403, 407, 261, 378]);
    const engineIds = await engineGreedy(model, prompt, 80, []);
    expect(engineIds).toEqual(referenceGreedy(model, prompt, 80, []));
    const text = model.tokenizer.decode([...prompt, ...engineIds]);
    expect(text).toMatch(
      /^Once upon a time, there was a little girl named Lily\. She loved to play outside in the park\. One day, she saw a big, red ball\./,
    );
  });

  it('a greedy story ends where llama2.c run.c ends it: at BOS, after 341 tokens, finish_reason "stop"', async () => {
    // No --model: the built-in default is this checkpoint, shipped in models/.
    const model = await loadModel();
    expect(model.source).toMatchObject({ id: 'stories260K', builtIn: true });
    const prompt = model.tokenizer.encode('Once upon a time', { addBos: true });
    const engine = await createEngine({ model, servedModelName: 'm' });
    const greedy = (ignoreEos: boolean) => greedyRun(engine, prompt, 400, ignoreEos);
    try {
      // Run on past the end: the model itself starts the next story with BOS + "Once upon a time".
      const runOn = await greedy(true);
      expect(runOn.finish.reason).toBe('length');
      expect(runOn.ids).toHaveLength(400);
      const bosAt = runOn.ids.indexOf(model.tokenizer.bosTokenId);
      expect(bosAt).toBe(341);
      expect(runOn.ids.slice(bosAt, bosAt + 5)).toEqual(prompt);

      const story = await greedy(false);
      expect(story.finish).toMatchObject({
        reason: 'stop',
        stopTokenId: 1,
        usage: { completionTokens: bosAt },
      });
      expect(story.ids).toEqual(runOn.ids.slice(0, bosAt));
      expect(story.ids).toEqual(referenceGreedy(model, prompt, 400, []));
      const text = model.tokenizer.decode(story.ids);
      expect(text).toMatch(/^, there was a little girl named Lily\./);
      expect(text).toMatch(/She was so happy and said, "Thank you, Lily! You are a good friend\."$/);
    } finally {
      await engine.close();
    }
  });

  it('with attention layers 1 and 3 dropped, the engine still equals the reference (and differs from full)', async () => {
    const model = await loadModel({ model: STORIES });
    const prompt = model.tokenizer.encode('Once upon a time', { addBos: true });
    const engineIds = await engineGreedy(model, prompt, 40, [1, 3]);
    expect(engineIds).toEqual(referenceGreedy(model, prompt, 40, [1, 3]));
    expect(engineIds).not.toEqual((await engineGreedy(model, prompt, 40, [])).slice(0, engineIds.length));
  });
});

describeWithAssets(
  [TINYSTORIES_656K],
  'tinystories-656K (Hugging Face directory, rotate-half RoPE, GQA 8/4)',
  () => {
    it('generates coherent English equal to the reference token for token', async () => {
      const model = await loadModel({ model: TINYSTORIES_HF });
      expect(model.source.kind).toBe('huggingface');
      const prompt = model.tokenizer.encode('Once upon a time', { addBos: true });
      const engineIds = await engineGreedy(model, prompt, 60, []);
      expect(engineIds).toEqual(referenceGreedy(model, prompt, 60, []));
      const text = model.tokenizer.decode(engineIds);
      // Coherent English: mostly dictionary-like words, and the story vocabulary shows up.
      const words = text.split(/\s+/).filter(Boolean);
      expect(words.length).toBeGreaterThan(25);
      expect(text).toMatch(/\b(little|girl|boy|named|day|play)\b/);
    });

    it('a greedy story ends on <|end_story|>, the EOS id of generation_config.json, with finish_reason "stop"', async () => {
      const model = await loadModel({ model: TINYSTORIES_HF });
      expect(model.config.eosTokenIds).toEqual([2]);
      expect(model.tokenizer.tokenText(2)).toBe('<|end_story|>');
      const prompt = model.tokenizer.encode('Once upon a time', { addBos: true });
      const engine = await createEngine({ model, servedModelName: 'm' });
      try {
        const runOn = await greedyRun(engine, prompt, 400, true);
        const endAt = runOn.ids.indexOf(2);
        expect(endAt).toBeGreaterThan(0);
        const story = await greedyRun(engine, prompt, 400, false);
        expect(story.finish).toMatchObject({ reason: 'stop', stopTokenId: 2 });
        expect(story.ids).toEqual(runOn.ids.slice(0, endAt));
        expect(story.ids).toEqual(referenceGreedy(model, prompt, 400, []));
      } finally {
        await engine.close();
      }
    });
  },
);
