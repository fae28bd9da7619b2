import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FinishEvent } from '../engine/client.ts';
import { createEngine } from '../engine/engine.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import { compareSessions } from '../engine/graph/testing/compare-decode.ts';
import { type GgufWriteType, writeModelAsGguf } from '../engine/model/gguf-writer.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { dequantizedWeights } from '../engine/quant/quantize-weights.ts';
import { parseWeightFlags, withWeightOptions } from '../engine/quant/weight-flags.ts';
import { greedyRun } from './support/greedy-run.ts';
import {
  describeWithAssets,
  STORIES_260K,
  TINYSTORIES_656K,
  TINYSTORIES_EVAL,
} from './support/shared-assets.ts';

/**
 * GGUF files written here from checkpoints loaded another way (llama2.c, Hugging Face) must run as
 * the originals do: the same greedy tokens through the real engine, and Q8_0 logits equal to the
 * float32 model on the same dequantized values.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-golden-gguf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function asGguf(model: LoadedModel, type: GgufWriteType, name: string): Promise<LoadedModel> {
  const file = path.join(tmp, `${name}-${type}.gguf`);
  writeModelAsGguf(file, model, { type });
  return loadModel({ model: file });
}

async function greedy(
  model: LoadedModel,
  prompt: number[],
  maxTokens: number,
  ignoreEos = false,
): Promise<{ ids: number[]; finish: FinishEvent }> {
  const engine = await createEngine({ model, servedModelName: 'm' });
  try {
    return await greedyRun(engine, prompt, maxTokens, ignoreEos);
  } finally {
    await engine.close();
  }
}

describe('stories260K converted to GGUF', () => {
  it('F32: greedy from "Once upon a time" is llama2.c\'s known text, token for token the original\'s, and ends at BOS', async () => {
    const original = await loadModel({ model: STORIES_260K });
    const gguf = await asGguf(original, 'f32', 'stories260K');
    const prompt = gguf.tokenizer.encode('Once upon a time', { addBos: true });
    expect(prompt).toEqual([1, 403, 407, 261, 378]);
    const story = await greedy(gguf, prompt, 400);
    expect(gguf.tokenizer.decode([...prompt, ...story.ids])).toMatch(
      /^Once upon a time, there was a little girl named Lily\. She loved to play outside in the park\. One day, she saw a big, red ball\. She wanted to play with it, but it was too high\./,
    );
    // The file names BOS as its end-of-turn id, so the story stops where run.c stops it.
    expect(story.finish).toMatchObject({ reason: 'stop', stopTokenId: 1, usage: { completionTokens: 341 } });
    expect(story.ids).toEqual((await greedy(original, prompt, 400)).ids);
  });

  it('Q8_0: MatMulNBits logits equal the float32 model on the dequantized weights within 1e-4', async () => {
    const original = await loadModel({ model: STORIES_260K });
    for (const type of ['q8_0', 'q4_0'] as const) {
      const gguf = await asGguf(original, type, 'stories260K');
      expect(gguf.weights.quantizedLayers?.[0]?.wq?.bits).toBe(type === 'q8_0' ? 8 : 4);
      // accuracy_level 0: the kernel dequantizes to float32 (level 4 would round activations to int8)
      const quantized = await ModelSession.create(gguf.config, gguf.weights, { accuracyLevel: 0 });
      const float = await ModelSession.create(gguf.config, dequantizedWeights(gguf.weights));
      try {
        const prompt = gguf.tokenizer.encode('Once upon a time', { addBos: true });
        expect(await compareSessions(quantized, float, gguf.config, prompt, 24)).toBeLessThanOrEqual(1e-4);
      } finally {
        await quantized.release();
        await float.release();
      }
    }
  });

  it('no --weights serves the file as stored (Q8_0 stays int8); --weights int8 keeps its matrices; --weights fp32 runs them dequantized', async () => {
    const original = await loadModel({ model: STORIES_260K });
    const gguf = await asGguf(original, 'q8_0', 'stories260K-flags');
    const asStored = withWeightOptions(gguf, parseWeightFlags({}));
    expect(asStored.weights.format).toBe('int8');
    expect(asStored.weights.quantizedLayers![2]!.wq).toBe(gguf.weights.quantizedLayers![2]!.wq);
    expect(withWeightOptions(original, parseWeightFlags({})).weights.quantizedLayers).toBeUndefined();
    const int8 = withWeightOptions(gguf, parseWeightFlags({ weights: 'int8' }));
    expect(int8.weights.quantizedLayers![2]!.wq).toBe(gguf.weights.quantizedLayers![2]!.wq);
    const fp32 = withWeightOptions(gguf, parseWeightFlags({ weights: 'fp32' }));
    expect(fp32.weights.quantizedLayers).toBeUndefined();
    expect(fp32.weights.layers[2]!.wq).toBe(gguf.weights.layers[2]!.wq);
  });
});

describeWithAssets(
  [TINYSTORIES_656K],
  'tinystories-656K (Hugging Face, rotate-half RoPE) converted to GGUF',
  () => {
    it('F32 and F16: the same greedy tokens as the original; the embedded vocabulary gives the same ids', async () => {
      const original = await loadModel({ model: TINYSTORIES_656K.path });
      const prompt = original.tokenizer.encode('Once upon a time', { addBos: true });
      const expected = await greedy(original, prompt, 120);
      for (const type of ['f32', 'f16'] as const) {
        const gguf = await asGguf(original, type, 'tinystories-656K');
        expect(gguf.config.ropeInterleaved).toBe(true);
        const stories = TINYSTORIES_EVAL.exists
          ? fs.readFileSync(TINYSTORIES_EVAL.path, 'utf8').split('\n<|endoftext|>\n').slice(0, 100)
          : [];
        for (const text of [
          'Once upon a time',
          'Tom and Sue saw a cat. "Hi, cat!" said Tom.',
          ' café 😀',
          ...stories,
        ]) {
          expect(gguf.tokenizer.encode(text, { addBos: true })).toEqual(
            original.tokenizer.encode(text, { addBos: true }),
          );
        }
        const run = await greedy(gguf, prompt, 120);
        expect(run.ids).toEqual(expected.ids);
        expect(run.finish.reason).toBe(expected.finish.reason);
        expect(gguf.tokenizer.decode(run.ids)).toBe(original.tokenizer.decode(expected.ids));
      }
    });
  },
);
