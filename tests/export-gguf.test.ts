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
  it(`sublayer plan → deci GGUF (F32): whole blocks removed, the rest as a built-in plan, and the greedy tokens of the full model with the plan`, async () => {
    const original = await loadModel({ model: modelPath() });
    const file = path.join(tmp, `${name}-sublayer.gguf`);
    const result = exportGguf(original, SUBLAYER_PLAN, { type: 'f32', out: file });
    const removed = SUBLAYER_PLAN.dropAttention.filter((l) => SUBLAYER_PLAN.dropMlp.includes(l)).length;
    expect(result).toMatchObject({ architecture: 'deci', blockCount: original.config.numLayers - removed });
    const exported = await loadModel({ model: file });
    expect(exported.config.numLayers).toBe(result.blockCount);
    expect(exported.builtInPlan).toMatchObject({ ...result.filePlan, format: 'gguf' });
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

  it('F16 and Q8_0 deci exports: the greedy tokens of the same-type full-model GGUF served with the plan', async () => {
    const original = await loadModel({ model: STORIES_260K });
    const plan = STORIES_PLANS.sublayer;
    const prompt = original.tokenizer.encode('Once upon a time', { addBos: true });
    for (const type of ['f16', 'q8_0'] as const) {
      const fullFile = path.join(tmp, `stories260K-full-${type}.gguf`);
      exportGguf(original, { dropAttention: [], dropMlp: [] }, { type, out: fullFile });
      const planFile = path.join(tmp, `stories260K-sublayer-${type}.gguf`);
      exportGguf(original, plan, { type, out: planFile });
      const exported = await loadModel({ model: planFile });
      if (type === 'q8_0') expect(exported.weights.format).toBe('int8');
      const expected = await greedy(await loadModel({ model: fullFile }), prompt, 120, plan);
      expect(await greedy(exported, prompt, 120)).toEqual(expected);
    }
  });

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
    expect(() => exportGguf(original, plan, { type: 'f32', out, dropEmulation: true })).toThrow(/--force/);
  });
});

describeWithAssets([TINYSTORIES_656K], 'tinystories-656K exported as GGUF with a plan', () => {
  roundTrips(() => TINYSTORIES_656K.path, 'tinystories-656K', 80, TINYSTORIES_PLANS);
});

/** The part of node-llama-cpp's API this file uses. */
interface NodeLlamaCpp {
  getLlama(options: { gpu: false; build: 'never'; logLevel: unknown }): Promise<Llama>;
  LlamaLogLevel: { error: unknown };
}
interface Llama {
  loadModel(options: { modelPath: string; gpuLayers: number }): Promise<{
    createContext(options: { contextSize: number; sequences: number; threads: number }): Promise<{
      getSequence(): { evaluate(tokens: number[], options: { temperature: number }): AsyncIterable<number> };
      dispose(): Promise<void>;
    }>;
    dispose(): Promise<void>;
  }>;
  dispose(): Promise<void>;
}

/**
 * node-llama-cpp's prebuilt llama.cpp (CPU), or why it cannot run here. Loaded once when the file is
 * collected, so the suite below can be skipped with the reason in its name.
 */
async function llamaCppOrReason(): Promise<{ llama: Llama } | { reason: string }> {
  try {
    // Not a devDependency: the registry this project installs from lacks node-llama-cpp's packages for
    // other platforms, so a lock file holding it fails `npm ci`. .ci/run installs it (--no-save);
    // elsewhere `npm install --no-save node-llama-cpp@3.22.1` does.
    const specifier = 'node-llama-cpp';
    const { getLlama, LlamaLogLevel } = (await import(specifier)) as NodeLlamaCpp;
    // build: 'never' — only the prebuilt binary from npm; nothing is downloaded or compiled.
    return { llama: await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error }) };
  } catch (e) {
    return { reason: `node-llama-cpp's prebuilt llama.cpp cannot load here (${(e as Error).message})` };
  }
}

const llamaCpp = await llamaCppOrReason();

/** llama.cpp's greedy tokens after a prompt of token ids, up to BOS (where llama2.c stories end). */
async function llamaCppGreedy(
  llama: Llama,
  file: string,
  prompt: number[],
  maxTokens: number,
): Promise<number[]> {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  try {
    // One thread: llama.cpp's spinning worker threads crawl on a small, shared CI machine.
    const context = await model.createContext({ contextSize: 512, sequences: 1, threads: 1 });
    try {
      const ids: number[] = [];
      for await (const token of context.getSequence().evaluate(prompt, { temperature: 0 })) {
        if (token === 1 || ids.length === maxTokens) break;
        ids.push(token);
      }
      return ids;
    } finally {
      await context.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** "identical" or where the two token streams first differ. */
function firstDivergence(a: number[], b: number[]): string {
  const at = a.findIndex((id, i) => id !== b[i]);
  if (at < 0 && a.length === b.length) return 'identical';
  const i = at < 0 ? Math.min(a.length, b.length) : at;
  return `first divergence at token ${i}: llama.cpp ${a[i]} vs dropserve ${b[i]} (lengths ${a.length} / ${b.length})`;
}

describe.skipIf('reason' in llamaCpp)(
  `llama.cpp (node-llama-cpp) runs the GGUF export${'reason' in llamaCpp ? ` — skipped: ${llamaCpp.reason}` : ''}`,
  () => {
    afterAll(async () => {
      if ('llama' in llamaCpp) await llamaCpp.llama.dispose();
    });

    for (const [label, plan] of [
      ['full model (llama arch)', { dropAttention: [] as number[], dropMlp: [] as number[] }],
      ['sublayer plan (deci arch)', STORIES_PLANS.sublayer],
      ['block plan (llama arch, one block removed)', STORIES_PLANS.block],
    ] as [string, DropSpec][]) {
      it(`stories260K F32, ${label}: llama.cpp's greedy tokens equal dropserve's`, async () => {
        if (!('llama' in llamaCpp)) return;
        const original = await loadModel({ model: STORIES_260K });
        const file = path.join(tmp, `llama-cpp-${label.split(' ')[0]}.gguf`);
        exportGguf(original, plan, { type: 'f32', out: file });
        const prompt = original.tokenizer.encode('Once upon a time', { addBos: true });
        const isFull = plan.dropAttention.length === 0 && plan.dropMlp.length === 0;
        const ours = await greedy(original, prompt, 200, isFull ? undefined : plan);
        const theirs = await llamaCppGreedy(llamaCpp.llama, file, prompt, 200);
        expect(ours.length).toBeGreaterThan(20);
        expect(firstDivergence(theirs, ours)).toBe('identical');
        expect(original.tokenizer.decode(theirs)).toBe(original.tokenizer.decode(ours));
      });
    }
  },
);
