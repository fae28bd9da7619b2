import path from 'node:path';
import { derivedSizes } from '../../engine/model/config.ts';
import { DECI_ARCHITECTURE, DECI_MODEL_TYPE, type DeciBlockConfig } from '../../engine/model/deci-config.ts';
import { DECI_LINEAR_ATTENTION, DECI_LINEAR_MLP } from '../../engine/model/deci-weights.ts';
import { hfConfigJson } from '../../engine/model/hf-export.ts';
import { SINGLE_FILE_NAME } from '../../engine/model/safetensors.ts';
import { type TensorToWrite, writeSafetensorsFile } from '../../engine/model/safetensors-writer.ts';
import type { ExportableModel } from './exportable-model.ts';
import type { ExportForms, SublayerExport } from './linear-forms.ts';

/**
 * A DeciLM (Llama-Nemotron-NAS) checkpoint of a plan: config.json with one block_configs entry per
 * layer, and safetensors holding only what remains. Field meanings: engine/model/deci-config.ts.
 */
export function writeDeciFiles(
  dir: string,
  source: ExportableModel,
  forms: ExportForms,
): Record<string, string> {
  const model = withFfnWidthOf256(source);
  const { config } = model;
  const json: Record<string, unknown> = {
    ...hfConfigJson(config),
    architectures: [DECI_ARCHITECTURE],
    model_type: DECI_MODEL_TYPE,
    block_configs: blockConfigs(model, forms),
  };
  writeSafetensorsFile(path.join(dir, SINGLE_FILE_NAME), deciTensors(model, forms), {
    dtype: 'F32',
    metadata: { format: 'pt' },
  });
  return {
    'config.json': `${JSON.stringify(json, null, 2)}\n`,
    'generation_config.json': `${JSON.stringify({ bos_token_id: config.bosTokenId, eos_token_id: config.eosTokenIds }, null, 2)}\n`,
  };
}

function blockConfigs(model: ExportableModel, forms: ExportForms): DeciBlockConfig[] {
  const { dim, hiddenDim, numHeads, numKvHeads } = model.config;
  // ffn_mult such that int(2·ffn_mult·dim/3) is the width (a multiple of 256, see below).
  const ffnMult = (3 * hiddenDim) / (2 * dim);
  return forms.attention.map((attention, l) => {
    const mlp = forms.mlp[l]!;
    return {
      attention: {
        no_op: attention.form === 'no_op',
        replace_with_linear: attention.form === 'linear',
        n_heads_in_group: attention.form === 'full' ? numHeads / numKvHeads : null,
      },
      ffn: {
        no_op: mlp.form === 'no_op',
        replace_with_linear: mlp.form === 'linear',
        ...(mlp.form === 'full' ? { ffn_mult: ffnMult, intermediate_size: hiddenDim } : { ffn_mult: null }),
      },
    };
  });
}

function deciTensors(model: ExportableModel, forms: ExportForms): TensorToWrite[] {
  const { config, weights } = model;
  const { qDim, kvDim } = derivedSizes(config);
  const { dim, hiddenDim, vocabSize } = config;
  const tensors: TensorToWrite[] = [
    { name: 'model.embed_tokens.weight', shape: [vocabSize, dim], data: weights.tokenEmbedding },
  ];
  const linear = (name: string, f: SublayerExport): TensorToWrite[] =>
    f.form === 'linear' ? [{ name, shape: [dim, dim], data: f.matrix }] : [];
  weights.layers.forEach((layer, l) => {
    const p = `model.layers.${l}.`;
    const attention = forms.attention[l]!;
    const mlp = forms.mlp[l]!;
    if (attention.form !== 'no_op') {
      tensors.push({ name: `${p}input_layernorm.weight`, shape: [dim], data: layer.attnNorm });
    }
    if (attention.form === 'full') {
      tensors.push(
        { name: `${p}self_attn.q_proj.weight`, shape: [qDim, dim], data: layer.wq },
        { name: `${p}self_attn.k_proj.weight`, shape: [kvDim, dim], data: layer.wk },
        { name: `${p}self_attn.v_proj.weight`, shape: [kvDim, dim], data: layer.wv },
        { name: `${p}self_attn.o_proj.weight`, shape: [dim, qDim], data: layer.wo },
      );
      if (layer.bq && layer.bk && layer.bv) {
        tensors.push(
          { name: `${p}self_attn.q_proj.bias`, shape: [qDim], data: layer.bq },
          { name: `${p}self_attn.k_proj.bias`, shape: [kvDim], data: layer.bk },
          { name: `${p}self_attn.v_proj.bias`, shape: [kvDim], data: layer.bv },
        );
      }
    }
    tensors.push(...linear(`${p}${DECI_LINEAR_ATTENTION}`, attention));
    if (mlp.form !== 'no_op') {
      tensors.push({ name: `${p}post_attention_layernorm.weight`, shape: [dim], data: layer.mlpNorm });
    }
    if (mlp.form === 'full') {
      tensors.push(
        { name: `${p}mlp.gate_proj.weight`, shape: [hiddenDim, dim], data: layer.wGate },
        { name: `${p}mlp.up_proj.weight`, shape: [hiddenDim, dim], data: layer.wUp },
        { name: `${p}mlp.down_proj.weight`, shape: [dim, hiddenDim], data: layer.wDown },
      );
    }
    tensors.push(...linear(`${p}${DECI_LINEAR_MLP}`, mlp));
  });
  tensors.push({ name: 'model.norm.weight', shape: [dim], data: weights.finalNorm });
  if (weights.lmHead !== weights.tokenEmbedding) {
    tensors.push({ name: 'lm_head.weight', shape: [vocabSize, dim], data: weights.lmHead });
  }
  return tensors;
}

/**
 * vLLM and llama.cpp derive the FFN width from ffn_mult rounded up to a multiple of 256, so a width
 * that is not one (tiny models) is padded with zero gate/up rows and zero down columns: silu(0)·0
 * adds nothing, so the function is unchanged and every reader agrees on the tensor shapes.
 */
function withFfnWidthOf256(model: ExportableModel): ExportableModel {
  const { dim, hiddenDim } = model.config;
  const padded = Math.ceil(hiddenDim / 256) * 256;
  if (padded === hiddenDim) return model;
  const padRows = (w: Float32Array): Float32Array => {
    const out = new Float32Array(padded * dim);
    out.set(w);
    return out;
  };
  const padColumns = (w: Float32Array): Float32Array => {
    const out = new Float32Array(dim * padded);
    for (let r = 0; r < dim; r++) out.set(w.subarray(r * hiddenDim, (r + 1) * hiddenDim), r * padded);
    return out;
  };
  return {
    ...model,
    config: { ...model.config, hiddenDim: padded },
    weights: {
      ...model.weights,
      layers: model.weights.layers.map((layer) => ({
        ...layer,
        wGate: padRows(layer.wGate),
        wUp: padRows(layer.wUp),
        wDown: padColumns(layer.wDown),
      })),
    },
  };
}
