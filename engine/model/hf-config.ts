import path from 'node:path';
import { DropserveError, modelLoadError } from '../errors.ts';
import type { Llama3RopeScaling, ModelConfig } from './config.ts';
import { readJsonObject, readOptionalJsonObject, tokenIdList } from './json-file.ts';

/**
 * config.json (+ generation_config.json) of a Hugging Face Llama-family checkpoint → ModelConfig.
 * Only what the engine implements is accepted; anything that would silently change the model's
 * function (other activations, o_proj/MLP biases, other RoPE scalings) is DS_UNSUPPORTED.
 */

export const SUPPORTED_ARCHITECTURES: Readonly<Record<string, ModelConfig['architecture']>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};

export interface HfConfigResult {
  config: ModelConfig;
  /** tie_word_embeddings as written; undefined when absent (the loader then decides from the tensors). */
  declaredTie: boolean | undefined;
  /** Human-readable adjustments made (e.g. context capped at the sliding window). */
  notes: string[];
}

export function readHuggingFaceConfig(dir: string): HfConfigResult {
  const file = path.join(dir, 'config.json');
  const raw = readJsonObject(file);
  const generation = readOptionalJsonObject(path.join(dir, 'generation_config.json')) ?? {};
  return parseHuggingFaceConfig(file, raw, generation);
}

/** The same from parsed JSON (a DeciLM config rewritten as the Llama it generalises, see deci-config.ts). */
export function parseHuggingFaceConfig(
  file: string,
  raw: Record<string, unknown>,
  generation: Record<string, unknown>,
): HfConfigResult {
  const notes: string[] = [];

  const architecture = architectureOf(file, raw);
  const int = (key: string, fallback?: number): number => {
    const value = raw[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
      throw modelLoadError(file, `"${key}" must be a positive integer, found ${JSON.stringify(raw[key])}`);
    }
    return value;
  };
  const num = (key: string, fallback: number): number => {
    const value = raw[key] ?? fallback;
    if (typeof value !== 'number' || !(value > 0)) {
      throw modelLoadError(file, `"${key}" must be a positive number, found ${JSON.stringify(raw[key])}`);
    }
    return value;
  };

  const dim = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  const headDim = raw.head_dim == null ? Math.floor(dim / numHeads) : int('head_dim');
  if (numHeads % numKvHeads !== 0) {
    throw modelLoadError(
      file,
      `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  }
  if (headDim % 2 !== 0) throw modelLoadError(file, `head_dim ${headDim} is odd; RoPE rotates pairs`);

  const activation = raw.hidden_act ?? 'silu';
  if (activation !== 'silu') {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${file}: hidden_act "${activation}" is not supported (only silu)`,
    );
  }
  if (raw.mlp_bias === true)
    throw new DropserveError('DS_UNSUPPORTED', `${file}: mlp_bias=true is not supported`);
  if (architecture !== 'qwen2' && raw.attention_bias === true) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${file}: attention_bias=true (q/k/v/o biases) is not supported`,
    );
  }

  let maxSeqLen = int('max_position_embeddings');
  const window = slidingWindow(raw);
  if (window !== undefined && window < maxSeqLen) {
    // Attention within the window is full attention, so capping the context keeps outputs exact.
    notes.push(`context capped at sliding_window ${window} (max_position_embeddings ${maxSeqLen})`);
    maxSeqLen = window;
  }

  // generation_config.json first: it is what transformers' generate() reads. May be empty here when
  // only the tokenizer names an EOS token; withTokenizerEos completes the list once it is loaded.
  const eosTokenIds = [
    ...new Set([...tokenIdList(generation.eos_token_id), ...tokenIdList(raw.eos_token_id)]),
  ];
  const bosTokenId = tokenIdList(raw.bos_token_id)[0] ?? tokenIdList(generation.bos_token_id)[0];
  if (bosTokenId === undefined)
    throw modelLoadError(file, 'no bos_token_id in config.json or generation_config.json');

  const declaredTie = typeof raw.tie_word_embeddings === 'boolean' ? raw.tie_word_embeddings : undefined;
  const config: ModelConfig = {
    architecture,
    dim,
    hiddenDim: int('intermediate_size'),
    numLayers: int('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: int('vocab_size'),
    maxSeqLen,
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    ropeInterleaved: false,
    hasQkvBias: architecture === 'qwen2',
    // Provisional: the loader settles it from the tensors present when config.json is silent.
    tieWordEmbeddings: declaredTie ?? false,
    bosTokenId,
    eosTokenIds,
  };
  const scaling = ropeScalingOf(file, raw.rope_scaling);
  if (scaling) config.ropeScaling = scaling;
  return { config, declaredTie, notes };
}

/**
 * Adds the tokenizer's EOS ids (tokenizer_config.json `eos_token`) to the ids that end generation, as
 * vLLM stops on the tokenizer's EOS as well as on generation_config's. Chat checkpoints often end a
 * turn with a token that only one of the files names.
 */
export function withTokenizerEos(
  config: ModelConfig,
  tokenizerEosIds: readonly number[],
  where: string,
): ModelConfig {
  config.eosTokenIds = [...new Set([...config.eosTokenIds, ...tokenizerEosIds])];
  if (config.eosTokenIds.length === 0) {
    throw modelLoadError(
      where,
      'no EOS token: none of generation_config.json, config.json, tokenizer_config.json names one',
    );
  }
  return config;
}

function architectureOf(file: string, raw: Record<string, unknown>): ModelConfig['architecture'] {
  const supported = Object.keys(SUPPORTED_ARCHITECTURES).join(', ');
  const declared = Array.isArray(raw.architectures) ? raw.architectures[0] : undefined;
  if (typeof declared === 'string') {
    const arch = SUPPORTED_ARCHITECTURES[declared];
    if (!arch) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        `${file}: architecture "${declared}" is not supported; supported: ${supported}`,
      );
    }
    return arch;
  }
  const byModelType = Object.values(SUPPORTED_ARCHITECTURES).find((a) => a === raw.model_type);
  if (byModelType) return byModelType;
  throw new DropserveError(
    'DS_UNSUPPORTED',
    `${file}: no "architectures" entry and model_type ${JSON.stringify(raw.model_type)}; supported: ${supported}`,
  );
}

function slidingWindow(raw: Record<string, unknown>): number | undefined {
  if (raw.use_sliding_window === false) return undefined;
  return typeof raw.sliding_window === 'number' && raw.sliding_window > 0 ? raw.sliding_window : undefined;
}

function ropeScalingOf(file: string, value: unknown): Llama3RopeScaling | undefined {
  if (value == null) return undefined;
  if (typeof value !== 'object') throw modelLoadError(file, `rope_scaling must be an object or null`);
  const s = value as Record<string, unknown>;
  const type = s.rope_type ?? s.type;
  if (type === 'default') return undefined;
  if (type !== 'llama3') {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${file}: rope_scaling type ${JSON.stringify(type)} is not supported (only "llama3")`,
    );
  }
  const field = (key: string): number => {
    const v = s[key];
    if (typeof v !== 'number' || !(v > 0)) {
      throw modelLoadError(file, `rope_scaling.${key} must be a positive number, found ${JSON.stringify(v)}`);
    }
    return v;
  };
  return {
    factor: field('factor'),
    lowFreqFactor: field('low_freq_factor'),
    highFreqFactor: field('high_freq_factor'),
    originalMaxPositionEmbeddings: field('original_max_position_embeddings'),
  };
}
