import fs from 'node:fs';
import path from 'node:path';
import type { ModelConfig } from './config.ts';
import { derivedSizes } from './config.ts';
import { INDEX_FILE_NAME, SINGLE_FILE_NAME } from './safetensors.ts';
import { type TensorToWrite, type WritableDtype, writeSafetensorsFile } from './safetensors-writer.ts';
import type { ModelWeights } from './weights.ts';

/**
 * Writes a model as a Hugging Face checkpoint directory (config.json, generation_config.json and
 * safetensors, optionally sharded with an index), the inverse of hf-loader. Used for test fixtures
 * and for saving a shortened (layer-removed) model for other tools.
 */

const ARCHITECTURE_CLASS: Record<ModelConfig['architecture'], string> = {
  llama: 'LlamaForCausalLM',
  mistral: 'MistralForCausalLM',
  qwen2: 'Qwen2ForCausalLM',
};

export interface HfExportOptions {
  /** Number of safetensors shards (1: a single model.safetensors, no index). */
  numShards?: number;
  /** dtype per shard; the last one repeats. Default F32. */
  shardDtypes?: readonly WritableDtype[];
}

export function exportHuggingFaceDir(
  dir: string,
  config: ModelConfig,
  weights: ModelWeights,
  options: HfExportOptions = {},
): void {
  if (config.ropeInterleaved) {
    // Exporting llama2.c weights needs the q/k row permutation that turns pairs into halves.
    throw new RangeError('exportHuggingFaceDir: interleaved-RoPE weights would need a q/k permutation first');
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(hfConfigJson(config), null, 2)}\n`);
  fs.writeFileSync(
    path.join(dir, 'generation_config.json'),
    `${JSON.stringify({ bos_token_id: config.bosTokenId, eos_token_id: config.eosTokenIds }, null, 2)}\n`,
  );
  const tensors = hfTensors(config, weights);
  const numShards = Math.max(1, Math.min(options.numShards ?? 1, tensors.length));
  const dtypes = options.shardDtypes ?? ['F32'];
  if (numShards === 1) {
    writeSafetensorsFile(path.join(dir, SINGLE_FILE_NAME), tensors, {
      dtype: dtypes[0],
      metadata: { format: 'pt' },
    });
    return;
  }
  const perShard = Math.ceil(tensors.length / numShards);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < numShards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(numShards).padStart(5, '0')}.safetensors`;
    const shard = tensors.slice(s * perShard, (s + 1) * perShard);
    const dtype = dtypes[Math.min(s, dtypes.length - 1)];
    writeSafetensorsFile(path.join(dir, file), shard, { dtype, metadata: { format: 'pt' } });
    for (const t of shard) weightMap[t.name] = file;
  }
  fs.writeFileSync(
    path.join(dir, INDEX_FILE_NAME),
    `${JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2)}\n`,
  );
}

export function hfConfigJson(config: ModelConfig): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: [ARCHITECTURE_CLASS[config.architecture]],
    model_type: config.architecture,
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.maxSeqLen,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    hidden_act: 'silu',
    tie_word_embeddings: config.tieWordEmbeddings,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds,
    torch_dtype: 'float32',
  };
  if (config.ropeScaling) {
    const s = config.ropeScaling;
    json.rope_scaling = {
      rope_type: 'llama3',
      factor: s.factor,
      low_freq_factor: s.lowFreqFactor,
      high_freq_factor: s.highFreqFactor,
      original_max_position_embeddings: s.originalMaxPositionEmbeddings,
    };
  }
  return json;
}

function hfTensors(config: ModelConfig, weights: ModelWeights): TensorToWrite[] {
  const { qDim, kvDim } = derivedSizes(config);
  const { dim, hiddenDim, vocabSize } = config;
  const tensors: TensorToWrite[] = [
    { name: 'model.embed_tokens.weight', shape: [vocabSize, dim], data: weights.tokenEmbedding },
  ];
  weights.layers.forEach((layer, l) => {
    const p = `model.layers.${l}.`;
    tensors.push(
      { name: `${p}input_layernorm.weight`, shape: [dim], data: layer.attnNorm },
      { name: `${p}self_attn.q_proj.weight`, shape: [qDim, dim], data: layer.wq },
      { name: `${p}self_attn.k_proj.weight`, shape: [kvDim, dim], data: layer.wk },
      { name: `${p}self_attn.v_proj.weight`, shape: [kvDim, dim], data: layer.wv },
      { name: `${p}self_attn.o_proj.weight`, shape: [dim, qDim], data: layer.wo },
      { name: `${p}post_attention_layernorm.weight`, shape: [dim], data: layer.mlpNorm },
      { name: `${p}mlp.gate_proj.weight`, shape: [hiddenDim, dim], data: layer.wGate },
      { name: `${p}mlp.up_proj.weight`, shape: [hiddenDim, dim], data: layer.wUp },
      { name: `${p}mlp.down_proj.weight`, shape: [dim, hiddenDim], data: layer.wDown },
    );
    if (layer.bq && layer.bk && layer.bv) {
      tensors.push(
        { name: `${p}self_attn.q_proj.bias`, shape: [qDim], data: layer.bq },
        { name: `${p}self_attn.k_proj.bias`, shape: [kvDim], data: layer.bk },
        { name: `${p}self_attn.v_proj.bias`, shape: [kvDim], data: layer.bv },
      );
    }
  });
  tensors.push({ name: 'model.norm.weight', shape: [dim], data: weights.finalNorm });
  if (weights.lmHead !== weights.tokenEmbedding) {
    tensors.push({ name: 'lm_head.weight', shape: [vocabSize, dim], data: weights.lmHead });
  }
  return tensors;
}
