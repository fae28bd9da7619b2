import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithAssets, TINYSTORIES_656K } from '../../tests/support/shared-assets.ts';
import { errorOf } from '../testing/expect-dropserve-error.ts';
import { readHuggingFaceConfig, withTokenizerEos } from './hf-config.ts';
import { exportHuggingFaceDir } from './hf-export.ts';
import { loadHuggingFaceDir, loadHuggingFaceModel } from './hf-loader.ts';
import { openSafetensors } from './safetensors.ts';
import { syntheticModel } from './synthetic.ts';
import type { LayerWeights, ModelWeights } from './weights.ts';

const TINY = TINYSTORIES_656K.path;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-hf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A directory with the given config.json (merged over a small valid one) and no weights. */
function configDir(name: string, overrides: Record<string, unknown>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  const base = {
    architectures: ['LlamaForCausalLM'],
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 300,
    max_position_embeddings: 256,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...base, ...overrides }));
  return dir;
}

/** Every tensor of a model with the name it has in an HF checkpoint. */
function namedTensors(weights: ModelWeights): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>([
    ['model.embed_tokens.weight', weights.tokenEmbedding],
    ['model.norm.weight', weights.finalNorm],
    ['lm_head.weight', weights.lmHead],
  ]);
  const names: Record<keyof LayerWeights, string> = {
    attnNorm: 'input_layernorm.weight',
    wq: 'self_attn.q_proj.weight',
    wk: 'self_attn.k_proj.weight',
    wv: 'self_attn.v_proj.weight',
    wo: 'self_attn.o_proj.weight',
    bq: 'self_attn.q_proj.bias',
    bk: 'self_attn.k_proj.bias',
    bv: 'self_attn.v_proj.bias',
    mlpNorm: 'post_attention_layernorm.weight',
    wGate: 'mlp.gate_proj.weight',
    wDown: 'mlp.down_proj.weight',
    wUp: 'mlp.up_proj.weight',
  };
  weights.layers.forEach((layer, l) => {
    for (const [key, name] of Object.entries(names)) {
      const t = layer[key as keyof LayerWeights];
      if (t) out.set(`model.layers.${l}.${name}`, t);
    }
  });
  return out;
}

describeWithAssets([TINYSTORIES_656K], 'loadHuggingFaceDir on tinystories-656K', () => {
  let loaded: ReturnType<typeof loadHuggingFaceDir>;
  beforeAll(() => {
    loaded = loadHuggingFaceDir(TINY);
  });

  it('reads config.json', () => {
    expect(loaded.config).toMatchObject({
      architecture: 'llama',
      dim: 128,
      hiddenDim: 384,
      numLayers: 2,
      numHeads: 8,
      numKvHeads: 4,
      headDim: 16,
      vocabSize: 2048,
      maxSeqLen: 512,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      ropeInterleaved: false,
      hasQkvBias: false,
      tieWordEmbeddings: true,
      bosTokenId: 1,
      eosTokenIds: [2],
    });
    expect(loaded.config.ropeScaling).toBeUndefined();
  });

  it('takes the tied embedding from lm_head.weight (the only copy in the file)', () => {
    const { weights } = loaded;
    expect(weights.lmHead).toBe(weights.tokenEmbedding);
    const stored = openSafetensors(TINY).get('lm_head.weight');
    // Byte comparison: toEqual over 262,144 floats takes seconds.
    expect(Buffer.from(weights.tokenEmbedding.buffer).equals(Buffer.from(stored.buffer))).toBe(true);
    expect(new Set(stored.subarray(0, 1000)).size).toBeGreaterThan(500); // real values, not zeros
    expect(weights.layers).toHaveLength(2);
    expect(weights.layers[1]!.wk).toHaveLength(64 * 128);
  });

  it('comes with its tokenizer', () => {
    expect(loaded.tokenizer.vocabSize).toBe(2048);
    expect(loaded.tokenizer.bosTokenId).toBe(1);
  });

  it('reports progress', () => {
    const lines: string[] = [];
    loadHuggingFaceModel(TINY, { onProgress: (m) => lines.push(m) });
    expect(lines[0]).toContain('2 layers');
    expect(lines.at(-1)).toBe('loaded 20/20 tensors');
  });
});

describe('sharded synthetic Qwen2 checkpoint (f32 shard + bf16 shard)', () => {
  const model = syntheticModel({
    numLayers: 3,
    dim: 32,
    hiddenDim: 48,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: 64,
    hasQkvBias: true,
    tieWordEmbeddings: false,
    seed: 99,
  });
  const dir = path.join(tmp, 'qwen2-sharded');
  exportHuggingFaceDir(dir, model.config, model.weights, { numShards: 2, shardDtypes: ['F32', 'BF16'] });

  it('writes two shards and an index', () => {
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(new Set(Object.values(index.weight_map)).size).toBe(2);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).architectures).toEqual([
      'Qwen2ForCausalLM',
    ]);
  });

  it('loads back: f32 tensors exactly, bf16 tensors within bfloat16 rounding', () => {
    const { config, weights } = loadHuggingFaceModel(dir);
    expect(config).toEqual(model.config);
    expect(weights.lmHead).not.toBe(weights.tokenEmbedding);
    expect(weights.layers[2]!.bv).toBeDefined();
    const shardOf = JSON.parse(
      fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'),
    ).weight_map;
    const expected = namedTensors(model.weights);
    const actual = namedTensors(weights);
    expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
    let exact = 0;
    let rounded = 0;
    for (const [name, want] of expected) {
      const got = actual.get(name)!;
      if (shardOf[name].startsWith('model-00001')) {
        expect(got, name).toEqual(want);
        exact++;
      } else {
        let worst = 0;
        for (let i = 0; i < want.length; i++)
          worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (Math.abs(want[i]!) + 1e-30));
        expect(worst, name).toBeLessThanOrEqual(2 ** -8);
        expect(got, name).not.toEqual(want); // really went through bf16
        rounded++;
      }
    }
    expect(exact).toBeGreaterThan(5);
    expect(rounded).toBeGreaterThan(5);
  });

  it('names tensor, file, expected and found shape on a mismatch', () => {
    const bad = path.join(tmp, 'qwen2-bad-shape');
    fs.cpSync(dir, bad, { recursive: true });
    const configFile = path.join(bad, 'config.json');
    const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
    fs.writeFileSync(configFile, JSON.stringify({ ...config, intermediate_size: 40 }));
    const e = errorOf(() => loadHuggingFaceModel(bad));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toMatch(
      /model-0000\d-of-00002\.safetensors: tensor "model\.layers\.0\.mlp\.gate_proj\.weight" has shape \[48, 32\], expected \[40, 32\]/,
    );
  });

  it('rejects a config with fewer layers than the checkpoint', () => {
    const bad = path.join(tmp, 'qwen2-layers');
    fs.cpSync(dir, bad, { recursive: true });
    const configFile = path.join(bad, 'config.json');
    fs.writeFileSync(
      configFile,
      JSON.stringify({ ...JSON.parse(fs.readFileSync(configFile, 'utf8')), num_hidden_layers: 2 }),
    );
    expect(errorOf(() => loadHuggingFaceModel(bad)).message).toContain(
      'layer 2 but config.json says num_hidden_layers 2',
    );
  });

  it('names a missing tensor', () => {
    const bad = path.join(tmp, 'llama-no-bias');
    fs.cpSync(dir, bad, { recursive: true });
    const configFile = path.join(bad, 'config.json');
    fs.writeFileSync(
      configFile,
      JSON.stringify({ ...JSON.parse(fs.readFileSync(configFile, 'utf8')), num_hidden_layers: 4 }),
    );
    expect(errorOf(() => loadHuggingFaceModel(bad)).message).toContain(
      'missing tensor "model.layers.3.input_layernorm.weight"',
    );
  });
});

describe('readHuggingFaceConfig', () => {
  it('names an unsupported architecture and lists the supported ones', () => {
    const e = errorOf(() => readHuggingFaceConfig(configDir('gpt2', { architectures: ['GPT2LMHeadModel'] })));
    expect(e.code).toBe('DS_UNSUPPORTED');
    expect(e.message).toContain('"GPT2LMHeadModel"');
    expect(e.message).toContain('LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM');
  });

  it('applies defaults: kv heads = heads, head_dim = hidden / heads, rope_theta 10000', () => {
    const { config, declaredTie } = readHuggingFaceConfig(configDir('defaults', {}));
    expect(config).toMatchObject({ numKvHeads: 4, headDim: 16, ropeTheta: 10000, rmsNormEps: 1e-6 });
    expect(declaredTie).toBeUndefined();
  });

  it('reads llama3 rope scaling, eos lists, explicit head_dim', () => {
    const dir = configDir('llama3', {
      head_dim: 32,
      rope_theta: 500000,
      eos_token_id: [2, 7],
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
    });
    const { config } = readHuggingFaceConfig(dir);
    expect(config.headDim).toBe(32);
    expect(config.eosTokenIds).toEqual([2, 7]);
    expect(config.ropeScaling).toEqual({
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    });
  });

  it('EOS ids: generation_config.json (number or list) first, then config.json, without repeats', () => {
    const listed = configDir('eos-generation-list', { eos_token_id: 2 });
    fs.writeFileSync(path.join(listed, 'generation_config.json'), JSON.stringify({ eos_token_id: [9, 2] }));
    expect(readHuggingFaceConfig(listed).config.eosTokenIds).toEqual([9, 2]);
    const single = configDir('eos-generation-number', { eos_token_id: undefined });
    fs.writeFileSync(path.join(single, 'generation_config.json'), JSON.stringify({ eos_token_id: 5 }));
    expect(readHuggingFaceConfig(single).config.eosTokenIds).toEqual([5]);
  });

  it('with no EOS id in either file, the tokenizer’s EOS token completes the list; none at all is an error', () => {
    const dir = configDir('eos-absent', { eos_token_id: undefined });
    const { config } = readHuggingFaceConfig(dir);
    expect(config.eosTokenIds).toEqual([]);
    expect(withTokenizerEos({ ...config }, [7], dir).eosTokenIds).toEqual([7]);
    const e = errorOf(() => withTokenizerEos({ ...config }, [], dir));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toContain('no EOS token');
    // A tokenizer EOS the configs already name is not repeated; one they do not name is added.
    const named = readHuggingFaceConfig(configDir('eos-named', { eos_token_id: [2, 7] })).config;
    expect(withTokenizerEos(named, [7, 3], dir).eosTokenIds).toEqual([2, 7, 3]);
  });

  it('rejects other rope scalings and activations', () => {
    const yarn = configDir('yarn', { rope_scaling: { type: 'yarn', factor: 4 } });
    expect(errorOf(() => readHuggingFaceConfig(yarn)).message).toContain(
      'rope_scaling type "yarn" is not supported',
    );
    const gelu = configDir('gelu', { hidden_act: 'gelu' });
    expect(errorOf(() => readHuggingFaceConfig(gelu)).code).toBe('DS_UNSUPPORTED');
  });

  it('caps Mistral context at the sliding window', () => {
    const dir = configDir('mistral', { architectures: ['MistralForCausalLM'], sliding_window: 128 });
    const { config, notes } = readHuggingFaceConfig(dir);
    expect(config.architecture).toBe('mistral');
    expect(config.maxSeqLen).toBe(128);
    expect(notes[0]).toContain('sliding_window 128');
  });

  it('names a bad field', () => {
    const dir = configDir('bad', { hidden_size: 'big' });
    expect(errorOf(() => readHuggingFaceConfig(dir)).message).toContain(
      '"hidden_size" must be a positive integer, found "big"',
    );
    expect(errorOf(() => readHuggingFaceConfig(path.join(tmp, 'nowhere'))).message).toContain(
      'config.json: no such file',
    );
  });
});
