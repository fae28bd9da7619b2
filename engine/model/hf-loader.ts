import fs from 'node:fs';
import path from 'node:path';
import { DropserveError, modelLoadError } from '../errors.ts';
import { HfTokenizer } from '../tokenizer/hf-tokenizer.ts';
import type { ModelConfig } from './config.ts';
import { derivedSizes } from './config.ts';
import { isDeciConfig, readDeciLayout } from './deci-config.ts';
import { builtInPlanOf, deciLayerWeights } from './deci-weights.ts';
import { parseHuggingFaceConfig, withTokenizerEos } from './hf-config.ts';
import { readJsonObject, readOptionalJsonObject } from './json-file.ts';
import type { BuiltInPlan } from './loaded-model.ts';
import { openSafetensors, type SafetensorsReader } from './safetensors.ts';
import type { LayerWeights, ModelWeights } from './weights.ts';

/**
 * A Hugging Face checkpoint directory (config.json + safetensors, single or sharded) as dropserve
 * weights. HF Llama uses rotate-half RoPE with q/k weights as stored, so nothing is permuted here:
 * the config says ropeInterleaved=false and the graph follows it.
 */

const EMBED = 'model.embed_tokens.weight';
const LM_HEAD = 'lm_head.weight';
const FINAL_NORM = 'model.norm.weight';
const LAYER_NAME = /^model\.layers\.(\d+)\./;

export interface HfLoadOptions {
  onProgress?: (message: string) => void;
}

export interface HfLoaded {
  config: ModelConfig;
  weights: ModelWeights;
  tokenizer: HfTokenizer;
}

export function loadHuggingFaceDir(dir: string, options: HfLoadOptions = {}): HfLoaded {
  const { config, weights } = loadHuggingFaceModel(dir, options);
  const tokenizer = HfTokenizer.fromDir(dir, {
    bosTokenId: config.bosTokenId,
    eosTokenIds: config.eosTokenIds,
  });
  return { config: withTokenizerEos(config, tokenizer.eosTokenIds, dir), weights, tokenizer };
}

/** Config and weights only (for a model whose tokenizer comes from elsewhere). */
export function loadHuggingFaceModel(
  dir: string,
  options: HfLoadOptions = {},
): { config: ModelConfig; weights: ModelWeights; builtInPlan?: BuiltInPlan } {
  if (!fs.existsSync(dir)) throw modelLoadError(dir, 'no such directory');
  const progress = options.onProgress ?? (() => {});
  const configFile = path.join(dir, 'config.json');
  const rawConfig = readJsonObject(configFile);
  const generation = readOptionalJsonObject(path.join(dir, 'generation_config.json')) ?? {};
  // DeciLM (a plan exported by dropserve or a Nemotron-NAS model): read as the Llama it generalises.
  const deci = isDeciConfig(rawConfig) ? readDeciLayout(configFile, rawConfig) : undefined;
  const { config, declaredTie, notes } = parseHuggingFaceConfig(
    configFile,
    deci ? deci.llamaConfig : rawConfig,
    generation,
  );
  progress(
    `config: ${config.architecture}, ${config.numLayers} layers, dim ${config.dim}, ${config.numHeads} heads ` +
      `(${config.numKvHeads} kv), vocab ${config.vocabSize}`,
  );
  for (const note of notes) progress(note);
  const reader = openWeights(dir);
  checkLayerCount(reader, config);

  const resolve = (name: string): string | undefined => {
    if (reader.has(name)) return name;
    // Some exports store a tied tensor once and record the other name in __metadata__.
    const alias = reader.metadata[name];
    return alias !== undefined && reader.has(alias) ? alias : undefined;
  };
  const embedName = resolve(EMBED);
  const headName = resolve(LM_HEAD);
  const tie = declaredTie ?? headName === undefined;
  config.tieWordEmbeddings = tie;

  const { qDim, kvDim } = derivedSizes(config);
  const { dim, hiddenDim, vocabSize } = config;
  // A DeciLM file holds only what its plan keeps: count what is there.
  const total = deci
    ? reader.names().length
    : config.numLayers * (config.hasQkvBias ? 12 : 9) + (tie ? 2 : 3);
  let loaded = 0;
  const reportEvery = Math.max(1, Math.ceil(total / 10));
  const read = (name: string | undefined, shape: number[], what = name): Float32Array => {
    if (name === undefined)
      throw modelLoadError(dir, `missing tensor "${what}" (files: ${reader.files.join(', ')})`);
    const tensor = reader.get(name, shape);
    loaded++;
    if (loaded % reportEvery === 0 || loaded === total) progress(`loaded ${loaded}/${total} tensors`);
    return tensor;
  };

  let tokenEmbedding: Float32Array;
  let lmHead: Float32Array;
  if (tie) {
    const source = embedName ?? headName;
    tokenEmbedding = read(source, [vocabSize, dim], `${EMBED} (or ${LM_HEAD}, tied)`);
    lmHead = tokenEmbedding;
  } else {
    if (headName === undefined) {
      throw modelLoadError(dir, `tie_word_embeddings is false but there is no "${LM_HEAD}" tensor`);
    }
    tokenEmbedding = read(embedName, [vocabSize, dim], EMBED);
    lmHead = read(headName, [vocabSize, dim]);
  }

  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}.`;
    const t = (suffix: string, shape: number[]) => read(resolve(p + suffix), shape, p + suffix);
    if (deci) {
      layers.push(deciLayerWeights(config, deci, l, t));
      continue;
    }
    const layer: LayerWeights = {
      attnNorm: t('input_layernorm.weight', [dim]),
      wq: t('self_attn.q_proj.weight', [qDim, dim]),
      wk: t('self_attn.k_proj.weight', [kvDim, dim]),
      wv: t('self_attn.v_proj.weight', [kvDim, dim]),
      wo: t('self_attn.o_proj.weight', [dim, qDim]),
      mlpNorm: t('post_attention_layernorm.weight', [dim]),
      wGate: t('mlp.gate_proj.weight', [hiddenDim, dim]),
      wDown: t('mlp.down_proj.weight', [dim, hiddenDim]),
      wUp: t('mlp.up_proj.weight', [hiddenDim, dim]),
    };
    if (config.hasQkvBias) {
      layer.bq = t('self_attn.q_proj.bias', [qDim]);
      layer.bk = t('self_attn.k_proj.bias', [kvDim]);
      layer.bv = t('self_attn.v_proj.bias', [kvDim]);
    }
    layers.push(layer);
  }
  const finalNorm = read(resolve(FINAL_NORM), [dim], FINAL_NORM);
  const weights = { tokenEmbedding, layers, finalNorm, lmHead };
  if (!deci) return { config, weights };
  const read2 = (l: number, suffix: string, shape: number[]): Float32Array =>
    read(resolve(`model.layers.${l}.${suffix}`), shape, `model.layers.${l}.${suffix}`);
  return { config, weights, builtInPlan: builtInPlanOf(config, deci, read2) };
}

function openWeights(dir: string): SafetensorsReader {
  const hasSafetensors = fs.readdirSync(dir).some((f) => f.endsWith('.safetensors'));
  if (
    !hasSafetensors &&
    fs.readdirSync(dir).some((f) => f.startsWith('pytorch_model') && f.endsWith('.bin'))
  ) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${dir}: only PyTorch pickle weights (pytorch_model*.bin) found; re-save the model as safetensors`,
    );
  }
  return openSafetensors(dir);
}

/** A checkpoint with more layers than config.json says is a mismatch, not something to ignore. */
function checkLayerCount(reader: SafetensorsReader, config: ModelConfig): void {
  let maxLayer = -1;
  for (const name of reader.names()) {
    const m = LAYER_NAME.exec(name);
    if (m) maxLayer = Math.max(maxLayer, Number(m[1]));
  }
  if (maxLayer >= config.numLayers) {
    throw modelLoadError(
      reader.files[0]!,
      `holds tensors for layer ${maxLayer} but config.json says num_hidden_layers ${config.numLayers}`,
    );
  }
}
