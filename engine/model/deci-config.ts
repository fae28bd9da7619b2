import { modelLoadError } from '../errors.ts';

/**
 * DeciLM / Llama-Nemotron-NAS config.json (architectures ["DeciLMForCausalLM"]): a Llama whose layers
 * differ, each described by a `block_configs` entry. The fields read, as vLLM's nemotron_nas.py and
 * llama.cpp's `deci` converter read them:
 *   attention.no_op               the layer has no attention (and no input_layernorm)
 *   attention.replace_with_linear attention is one bias-free linear map of the normed input,
 *                                 `model.layers.N.self_attn.linear_attn.weight` [hidden, hidden]
 *   attention.n_heads_in_group    query heads per KV head (num_key_value_heads = heads / this)
 *   ffn.no_op / ffn.replace_with_linear (`mlp.linear_mlp.weight`) likewise for the MLP
 *   ffn.ffn_mult                  intermediate size = ceil256(int(2 * ffn_mult * hidden / 3))
 * dropserve also writes `ffn.intermediate_size` (the others ignore unknown keys) because tiny models
 * have intermediate sizes that are not multiples of 256; when present it wins over ffn_mult.
 */

export const DECI_ARCHITECTURE = 'DeciLMForCausalLM';
export const DECI_MODEL_TYPE = 'nemotron-nas';

export interface DeciSublayerConfig {
  no_op?: boolean;
  replace_with_linear?: boolean;
}

export interface DeciBlockConfig {
  attention: DeciSublayerConfig & { n_heads_in_group?: number | null };
  ffn: DeciSublayerConfig & { ffn_mult?: number | null; intermediate_size?: number };
}

/** How each sublayer of a layer is stored. */
export type DeciSublayerForm = 'full' | 'no_op' | 'linear';

export interface DeciLayout {
  attention: DeciSublayerForm[];
  mlp: DeciSublayerForm[];
  /** The same config.json, rewritten as the plain Llama config of the kept sublayers' shapes. */
  llamaConfig: Record<string, unknown>;
}

export function isDeciConfig(raw: Record<string, unknown>): boolean {
  return Array.isArray(raw.architectures) && raw.architectures[0] === DECI_ARCHITECTURE;
}

/** The FFN width DeciLM derives from ffn_mult (vLLM `_ffn_mult_to_intermediate_size`). */
export function ffnMultToIntermediateSize(ffnMult: number, hidden: number): number {
  const size = Math.trunc((2 * ffnMult * hidden) / 3);
  return Math.ceil(size / 256) * 256;
}

function formOf(sub: DeciSublayerConfig): DeciSublayerForm {
  if (sub.no_op === true) return 'no_op';
  if (sub.replace_with_linear === true) return 'linear';
  return 'full';
}

export function readDeciLayout(file: string, raw: Record<string, unknown>): DeciLayout {
  const blocks = raw.block_configs;
  const hidden = raw.hidden_size;
  const heads = raw.num_attention_heads;
  if (!Array.isArray(blocks) || blocks.length === 0) {
    throw modelLoadError(file, `${DECI_ARCHITECTURE} needs a non-empty "block_configs" list`);
  }
  if (typeof hidden !== 'number' || typeof heads !== 'number') {
    throw modelLoadError(file, '"hidden_size" and "num_attention_heads" must be numbers');
  }
  if (raw.num_hidden_layers !== undefined && raw.num_hidden_layers !== blocks.length) {
    throw modelLoadError(
      file,
      `num_hidden_layers is ${raw.num_hidden_layers} but block_configs has ${blocks.length} entries`,
    );
  }
  const attention: DeciSublayerForm[] = [];
  const mlp: DeciSublayerForm[] = [];
  const kvHeads = new Set<number>();
  const ffnSizes = new Set<number>();
  blocks.forEach((entry, layer) => {
    const block = entry as Partial<DeciBlockConfig>;
    if (typeof block !== 'object' || block === null || !block.attention || !block.ffn) {
      throw modelLoadError(file, `block_configs[${layer}] needs "attention" and "ffn" objects`);
    }
    const attn = formOf(block.attention);
    const ffn = formOf(block.ffn);
    attention.push(attn);
    mlp.push(ffn);
    if (attn === 'full') {
      const group = block.attention.n_heads_in_group;
      if (typeof group !== 'number' || !Number.isInteger(group) || group <= 0 || heads % group !== 0) {
        throw modelLoadError(
          file,
          `block_configs[${layer}].attention.n_heads_in_group must divide num_attention_heads ${heads}, found ${JSON.stringify(group)}`,
        );
      }
      kvHeads.add(heads / group);
    }
    if (ffn === 'full') {
      const explicit = block.ffn.intermediate_size;
      const mult = block.ffn.ffn_mult;
      if (typeof explicit === 'number') ffnSizes.add(explicit);
      else if (typeof mult === 'number') ffnSizes.add(ffnMultToIntermediateSize(mult, hidden));
      else throw modelLoadError(file, `block_configs[${layer}].ffn needs "ffn_mult"`);
    }
  });
  // One KV cache layout and one MLP width serve every layer in dropserve's graph.
  if (kvHeads.size > 1) {
    throw modelLoadError(
      file,
      `layers use different KV head counts (${[...kvHeads].join(', ')}); dropserve needs one n_heads_in_group for all kept attention`,
    );
  }
  if (ffnSizes.size > 1) {
    throw modelLoadError(
      file,
      `layers use different FFN widths (${[...ffnSizes].join(', ')}); dropserve needs one ffn_mult for all kept MLPs`,
    );
  }
  const numKvHeads = [...kvHeads][0] ?? raw.num_key_value_heads ?? heads;
  const intermediate = [...ffnSizes][0] ?? raw.intermediate_size ?? 1;
  const llamaConfig: Record<string, unknown> = {
    ...raw,
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    num_hidden_layers: blocks.length,
    num_key_value_heads: numKvHeads,
    intermediate_size: intermediate,
  };
  delete llamaConfig.block_configs;
  return { attention, mlp, llamaConfig };
}
