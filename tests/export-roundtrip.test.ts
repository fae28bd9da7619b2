import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runPruneCommand } from '../cli/prune.ts';
import { DEFAULT_SAMPLING } from '../engine/client.ts';
import { createEngine } from '../engine/engine.ts';
import { ffnMultToIntermediateSize } from '../engine/model/deci-config.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { openSafetensors } from '../engine/model/safetensors.ts';
import {
  type DropSpec,
  type EmulationFile,
  loadPlanFile,
  PLAN_SCHEMA_ID,
  planShapeOf,
} from '../engine/plan/plan.ts';
import { modelCardOf } from '../server/openai/models/serving.ts';
import { describeWithAssets, STORIES_260K, TINYSTORIES_656K } from './support/shared-assets.ts';

/**
 * `prune export --format hf|deci` round trips: a plan exported from a real model, loaded back into
 * dropserve, gives the greedy tokens of the full model served with that plan. Exports run through
 * the CLI entry point; tokens come from real onnxruntime sessions.
 */
const PROMPT = [1, 403, 407, 261, 378];
const MAX_TOKENS = 24;

const dir = mkdtempSync(join(tmpdir(), 'dropserve-export-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function greedyTokens(model: LoadedModel, spec?: DropSpec): Promise<number[]> {
  const engine = await createEngine({
    model,
    servedModelName: 'm',
    variants: spec ? [{ name: 'plan', spec }] : [],
    kvCacheBytes: 16 << 20,
  });
  try {
    const ids: number[] = [];
    for await (const event of engine.generate({
      requestId: 'greedy',
      variant: spec ? 'm:plan' : 'm',
      promptTokenIds: PROMPT,
      maxTokens: MAX_TOKENS,
      ignoreEos: true,
      sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
    })) {
      if (event.type === 'token') ids.push(event.tokenId);
    }
    return ids;
  } finally {
    await engine.close();
  }
}

function writePlan(
  name: string,
  model: LoadedModel,
  drops: { attention: number[]; mlp: number[] },
  emulation?: EmulationFile,
): string {
  const path = join(dir, `${name}.json`);
  const plan = {
    schema: PLAN_SCHEMA_ID,
    version: 1,
    model: planShapeOf(model.source.id, model.config),
    drop_attention: drops.attention,
    drop_mlp: drops.mlp,
    ...(emulation
      ? {
          emulation: {
            file: `${name}.emulation.json`,
            kind: emulation.entries[0]!.kind,
            ...(emulation.entries[0]!.rank ? { rank: emulation.entries[0]!.rank } : {}),
          },
        }
      : {}),
  };
  writeFileSync(path, JSON.stringify(plan));
  if (emulation) writeFileSync(join(dir, `${name}.emulation.json`), JSON.stringify(emulation));
  return path;
}

/** Deterministic small values (a fixed LCG), so a replacement changes the tokens without swamping them. */
function smallValues(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 0.2;
  });
}

async function exportCli(modelPath: string, plan: string, format: string, out: string, ...extra: string[]) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await runPruneCommand(
    ['export', '--model', modelPath, '--plan', plan, '--format', format, '--out', out, ...extra],
    { stdout: (t) => stdout.push(t), stderr: (t) => stderr.push(t), showProgress: false },
  );
  return { code, stdout: stdout.join(''), stderr: stderr.join('') };
}

function roundTripSuite(
  label: string,
  modelPath: () => string,
  sublayer: { attention: number[]; mlp: number[] },
  block: number,
) {
  let full: LoadedModel;
  const load = async (): Promise<LoadedModel> => {
    full ??= await loadModel({ model: modelPath() });
    return full;
  };

  it(`${label}: a sublayer plan exported as deci loads back with the plan built in and the same greedy tokens`, async () => {
    const model = await load();
    const planPath = writePlan(`${label}-sublayer`, model, sublayer);
    const out = join(dir, `${label}-deci`);
    const result = await exportCli(modelPath(), planPath, 'deci', out);
    expect(result.code).toBe(0);

    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['DeciLMForCausalLM']);
    const groups = model.config.numHeads / model.config.numKvHeads;
    for (let l = 0; l < model.config.numLayers; l++) {
      const attentionDropped = sublayer.attention.includes(l);
      expect(config.block_configs[l].attention).toEqual({
        no_op: attentionDropped,
        replace_with_linear: false,
        n_heads_in_group: attentionDropped ? null : groups,
      });
      const ffn = config.block_configs[l].ffn;
      expect(ffn.no_op).toBe(sublayer.mlp.includes(l));
      // What vLLM / llama.cpp derive from ffn_mult must be the width stored (zero-padded to 256).
      if (!ffn.no_op)
        expect(ffnMultToIntermediateSize(ffn.ffn_mult, model.config.dim)).toBe(ffn.intermediate_size);
    }
    const kept = sublayer.mlp.includes(0) ? 1 : 0;
    const padded = Math.ceil(model.config.hiddenDim / 256) * 256;
    expect(openSafetensors(out).info(`model.layers.${kept}.mlp.gate_proj.weight`).shape).toEqual([
      padded,
      model.config.dim,
    ]);
    const names = new Set(openSafetensors(out).names());
    expect(names.has(`model.layers.${sublayer.attention[0]}.self_attn.q_proj.weight`)).toBe(false);
    expect(names.has(`model.layers.${sublayer.mlp[0]}.mlp.down_proj.weight`)).toBe(false);

    const { spec } = loadPlanFile(planPath, model.config);
    const expected = await greedyTokens(model, spec);
    expect(expected).not.toEqual(await greedyTokens(model)); // the plan changes the output
    const exported = await loadModel({ model: out });
    expect(exported.builtInPlan).toMatchObject({
      format: 'deci',
      dropAttention: [...sublayer.attention].sort(),
      dropMlp: [...sublayer.mlp].sort(),
    });
    expect(await greedyTokens(exported)).toEqual(expected);
  });

  it(`${label}: a whole-block plan exported as hf is a shorter Llama with the same greedy tokens`, async () => {
    const model = await load();
    const planPath = writePlan(`${label}-block`, model, { attention: [block], mlp: [block] });
    const out = join(dir, `${label}-hf`);
    expect((await exportCli(modelPath(), planPath, 'hf', out)).code).toBe(0);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['LlamaForCausalLM']);
    expect(config.num_hidden_layers).toBe(model.config.numLayers - 1);

    const { spec } = loadPlanFile(planPath, model.config);
    const exported = await loadModel({ model: out });
    expect(exported.builtInPlan).toBeUndefined();
    expect(await greedyTokens(exported)).toEqual(await greedyTokens(model, spec));
  });

  it(`${label}: a sublayer-only plan is refused by hf with a pointer to deci`, async () => {
    const model = await load();
    const planPath = writePlan(`${label}-sublayer-hf`, model, sublayer);
    await expect(exportCli(modelPath(), planPath, 'hf', join(dir, `${label}-refused`))).rejects.toThrow(
      /whole blocks only.*--format deci/,
    );
  });
}

describe('prune export round trip: stories260K (llama2.c)', () => {
  roundTripSuite('stories260K', () => STORIES_260K, { attention: [1, 3], mlp: [2] }, 2);

  it('a low-rank emulation becomes replace_with_linear and serves the same tokens as dropserve with that emulation', async () => {
    const model = await loadModel({ model: STORIES_260K });
    const { dim } = model.config;
    const rank = 4;
    const planPath = writePlan(
      'lowrank',
      model,
      { attention: [1], mlp: [3] },
      {
        schema: 'dropserve.emulation',
        version: 1,
        dim,
        entries: [
          {
            sublayer: 'attention',
            layer: 1,
            kind: 'lowrank',
            rank,
            down: smallValues(dim * rank, 1),
            up: smallValues(rank * dim, 2),
          },
          {
            sublayer: 'mlp',
            layer: 3,
            kind: 'lowrank',
            rank,
            down: smallValues(dim * rank, 3),
            up: smallValues(rank * dim, 4),
          },
        ],
      },
    );
    const out = join(dir, 'lowrank-deci');
    expect((await exportCli(STORIES_260K, planPath, 'deci', out)).code).toBe(0);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.block_configs[1].attention).toMatchObject({ no_op: false, replace_with_linear: true });
    expect(config.block_configs[3].ffn).toMatchObject({ no_op: false, replace_with_linear: true });
    const names = new Set(openSafetensors(out).names());
    expect(names.has('model.layers.1.self_attn.linear_attn.weight')).toBe(true);
    expect(names.has('model.layers.3.mlp.linear_mlp.weight')).toBe(true);

    const { spec } = loadPlanFile(planPath, model.config);
    const expected = await greedyTokens(model, spec);
    expect(expected).not.toEqual(await greedyTokens(model, { dropAttention: [1], dropMlp: [3] }));
    const exported = await loadModel({ model: out });
    expect(await greedyTokens(exported)).toEqual(expected);

    // prune eval on the export applies its plan too: the same perplexity as the full model with the plan.
    const text = join(dir, 'eval.txt');
    writeFileSync(
      text,
      'Once upon a time, there was a little girl named Lily. She liked to play in the park.\n',
    );
    const evalJson = async (...args: string[]) => {
      const stdout: string[] = [];
      const io = { stdout: (t: string) => stdout.push(t), stderr: () => {}, showProgress: false };
      expect(await runPruneCommand(['eval', '--data', text, '--json', ...args], io)).toBe(0);
      return JSON.parse(stdout.join('')) as { perplexity: number; drop_attention: number[] };
    };
    const fromExport = await evalJson('--model', out);
    const fromPlan = await evalJson('--model', STORIES_260K, '--plan', planPath);
    expect(fromExport.drop_attention).toEqual([1]);
    expect(fromExport.perplexity).toBeCloseTo(fromPlan.perplexity, 4);

    const engine = await createEngine({ model: exported, servedModelName: 'm', kvCacheBytes: 1 << 20 });
    try {
      expect(modelCardOf(engine, engine.variants()[0]!).dropserve_source?.plan).toEqual({
        format: 'deci',
        drop_attention: [1],
        drop_mlp: [3],
        emulation: ['attention.1', 'mlp.3'],
      });
    } finally {
      await engine.close();
    }
  });

  it('a bias emulation is refused by deci unless --drop-emulation, which exports it as no_op', async () => {
    const model = await loadModel({ model: STORIES_260K });
    const planPath = writePlan(
      'bias',
      model,
      { attention: [2], mlp: [] },
      {
        schema: 'dropserve.emulation',
        version: 1,
        dim: model.config.dim,
        entries: [{ sublayer: 'attention', layer: 2, kind: 'bias', bias: smallValues(model.config.dim, 5) }],
      },
    );
    const out = join(dir, 'bias-deci');
    await expect(exportCli(STORIES_260K, planPath, 'deci', out)).rejects.toThrow(
      /attention 2 has a bias emulation.*--drop-emulation/,
    );
    const result = await exportCli(STORIES_260K, planPath, 'deci', out, '--drop-emulation');
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('attention 2: a bias emulation left out (no_op)');
    const exported = await loadModel({ model: out });
    expect(exported.builtInPlan).toEqual({ format: 'deci', dropAttention: [2], dropMlp: [] });
    expect(await greedyTokens(exported)).toEqual(
      await greedyTokens(model, { dropAttention: [2], dropMlp: [] }),
    );
  });
});

describe('DeciLM configs dropserve cannot serve', () => {
  it('refuses layers with different KV head counts, naming them', async () => {
    const model = await loadModel({ model: STORIES_260K });
    const planPath = writePlan('mixed-kv', model, { attention: [1], mlp: [] });
    const out = join(dir, 'mixed-kv-deci');
    expect((await exportCli(STORIES_260K, planPath, 'deci', out)).code).toBe(0);
    const configPath = join(out, 'config.json');
    const config = JSON.parse(readFileSync(configPath, 'utf8'));
    config.block_configs[0].attention.n_heads_in_group = 1;
    writeFileSync(configPath, JSON.stringify(config));
    await expect(loadModel({ model: out })).rejects.toThrow(/different KV head counts \(8, 4\)/);
  });
});

describe('prune export --format gguf through the CLI', () => {
  it('writes the deci GGUF of a sublayer plan, which loads back with the same greedy tokens', async () => {
    const model = await loadModel({ model: STORIES_260K });
    const planPath = writePlan('gguf-cli', model, { attention: [1, 3], mlp: [2] });
    const out = join(dir, 'plan.gguf');
    const result = await exportCli(STORIES_260K, planPath, 'gguf', out);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('architecture deci');
    const exported = await loadModel({ model: out });
    const { spec } = loadPlanFile(planPath, model.config);
    expect(await greedyTokens(exported)).toEqual(await greedyTokens(model, spec));
  });
});

describeWithAssets([TINYSTORIES_656K], 'prune export round trip: tinystories-656K (Hugging Face)', () => {
  roundTripSuite('tinystories-656K', () => TINYSTORIES_656K.path, { attention: [0], mlp: [1] }, 1);
});
