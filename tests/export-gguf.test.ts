import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING } from '../engine/client.ts';
import { createEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import type { DropSpec } from '../engine/plan/plan.ts';
import { exportGguf } from '../pruning/export/gguf-export.ts';
import { describeWithAssets, STORIES_260K, TINYSTORIES_656K } from './support/shared-assets.ts';

/**
 * `prune export --format gguf`: a plan written as GGUF and loaded back must give the greedy tokens
 * of the full model served with that plan; llama.cpp (node-llama-cpp's prebuilt binary) must give
 * the same tokens for the same file.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-export-gguf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** stories260K (5 layers) — layer 1: attention only; layer 2: MLP only (under a kept attention); layer 4: the whole block. */
const STORIES_PLANS = {
  sublayer: { dropAttention: [1, 4], dropMlp: [2, 4] },
  block: { dropAttention: [3], dropMlp: [3] },
} satisfies Record<string, DropSpec>;
/** tinystories-656K (2 layers). */
const TINYSTORIES_PLANS = {
  sublayer: { dropAttention: [0], dropMlp: [1] },
  block: { dropAttention: [1], dropMlp: [1] },
} satisfies Record<string, DropSpec>;

/** Greedy tokens of one served variant (the full model, or "<model>:<variant>"). */
async function greedy(
  model: LoadedModel,
  prompt: number[],
  maxTokens: number,
  spec?: DropSpec,
): Promise<number[]> {
  const engine = await createEngine({
    model,
    servedModelName: 'm',
    ...(spec ? { variants: [{ name: 'plan', spec }] } : {}),
  });
  try {
    const ids: number[] = [];
    for await (const event of engine.generate({
      requestId: 'greedy',
      variant: spec ? 'm:plan' : 'm',
      promptTokenIds: prompt,
      maxTokens,
      ignoreEos: false,
      sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
    })) {
      if (event.type === 'token') ids.push(event.tokenId);
    }
    return ids;
  } finally {
    await engine.close();
  }
}

function roundTrips(
  modelPath: () => string,
  name: string,
  tokens: number,
  plans: { sublayer: DropSpec; block: DropSpec },
): void {
  const { sublayer: SUBLAYER_PLAN, block: BLOCK_PLAN } = plans;
  it(`sublayer plan → deci GGUF (F32): the built-in plan, and the greedy tokens of the full model with the plan`, async () => {
    const original = await loadModel({ model: modelPath() });
    const file = path.join(tmp, `${name}-sublayer.gguf`);
    const result = exportGguf(original, SUBLAYER_PLAN, { type: 'f32', out: file });
    expect(result).toMatchObject({ architecture: 'deci', blockCount: original.config.numLayers });
    const exported = await loadModel({ model: file });
    expect(exported.builtInPlan).toMatchObject({ ...SUBLAYER_PLAN, format: 'gguf' });
    const prompt = original.tokenizer.encode('Once upon a time', { addBos: true });
    const expected = await greedy(original, prompt, tokens, SUBLAYER_PLAN);
    expect(await greedy(exported, prompt, tokens)).toEqual(expected);
    // The plan changes the model: the comparison could fail.
    expect(await greedy(original, prompt, tokens)).not.toEqual(expected);
  });

  it("block plan → llama GGUF (F32) with the block removed: a shorter model giving the plan's greedy tokens", async () => {
    const original = await loadModel({ model: modelPath() });
    const file = path.join(tmp, `${name}-block.gguf`);
    const result = exportGguf(original, BLOCK_PLAN, { type: 'f32', out: file });
    expect(result).toMatchObject({ architecture: 'llama', blockCount: original.config.numLayers - 1 });
    const exported = await loadModel({ model: file });
    expect(exported.config.numLayers).toBe(original.config.numLayers - 1);
    expect(exported.builtInPlan).toBeUndefined();
    const prompt = original.tokenizer.encode('Once upon a time', { addBos: true });
    expect(await greedy(exported, prompt, tokens)).toEqual(
      await greedy(original, prompt, tokens, BLOCK_PLAN),
    );
  });
}

describe('stories260K exported as GGUF with a plan', () => {
  roundTrips(() => STORIES_260K, 'stories260K', 120, STORIES_PLANS);

  it('a plan with emulations is refused without --drop-emulation', async () => {
    const original = await loadModel({ model: STORIES_260K });
    const bias = { kind: 'bias' as const, bias: new Float32Array(original.config.dim) };
    const plan: DropSpec = {
      dropAttention: [1],
      dropMlp: [],
      emulation: { attention: [null, bias, null, null, null], mlp: Array(5).fill(null) },
    };
    const out = path.join(tmp, 'emulated.gguf');
    expect(() => exportGguf(original, plan, { type: 'f32', out })).toThrow(/--drop-emulation/);
    expect(fs.existsSync(out)).toBe(false);
    expect(exportGguf(original, plan, { type: 'f32', out, dropEmulation: true }).architecture).toBe('deci');
  });
});

describeWithAssets([TINYSTORIES_656K], 'tinystories-656K exported as GGUF with a plan', () => {
  roundTrips(() => TINYSTORIES_656K.path, 'tinystories-656K', 80, TINYSTORIES_PLANS);
});
