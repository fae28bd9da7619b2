import type { Emulation } from '../graph/io.ts';
import type { ModelConfig } from './config.ts';
import { derivedSizes } from './config.ts';
import type { DeciLayout } from './deci-config.ts';
import type { BuiltInPlan } from './loaded-model.ts';
import type { LayerWeights } from './weights.ts';

/** safetensors names of DeciLM's linear replacements (HF modeling_decilm.py, vLLM nemotron_nas.py). */
export const DECI_LINEAR_ATTENTION = 'self_attn.linear_attn.weight';
export const DECI_LINEAR_MLP = 'mlp.linear_mlp.weight';

type ReadTensor = (suffix: string, shape: number[]) => Float32Array;

/**
 * One layer of a DeciLM checkpoint in dropserve's uniform layout. A sublayer the file does not hold
 * gets zero matrices: the built-in plan drops it in every variant, so they are never computed, and
 * the graph keeps one shape for every layer. A linear replacement keeps its norm (it reads the normed
 * input, as dropserve's low-rank emulation does).
 */
export function deciLayerWeights(
  config: ModelConfig,
  deci: DeciLayout,
  layer: number,
  read: ReadTensor,
): LayerWeights {
  const { qDim, kvDim } = derivedSizes(config);
  const { dim, hiddenDim } = config;
  const attention = deci.attention[layer]!;
  const mlp = deci.mlp[layer]!;
  const normOrOnes = (suffix: string, form: string): Float32Array =>
    form === 'no_op' ? new Float32Array(dim).fill(1) : read(suffix, [dim]);
  const full = (form: string, suffix: string, shape: number[]): Float32Array =>
    form === 'full' ? read(suffix, shape) : new Float32Array(shape[0]! * (shape[1] ?? 1));
  const weights: LayerWeights = {
    attnNorm: normOrOnes('input_layernorm.weight', attention),
    wq: full(attention, 'self_attn.q_proj.weight', [qDim, dim]),
    wk: full(attention, 'self_attn.k_proj.weight', [kvDim, dim]),
    wv: full(attention, 'self_attn.v_proj.weight', [kvDim, dim]),
    wo: full(attention, 'self_attn.o_proj.weight', [dim, qDim]),
    mlpNorm: normOrOnes('post_attention_layernorm.weight', mlp),
    wGate: full(mlp, 'mlp.gate_proj.weight', [hiddenDim, dim]),
    wDown: full(mlp, 'mlp.down_proj.weight', [dim, hiddenDim]),
    wUp: full(mlp, 'mlp.up_proj.weight', [hiddenDim, dim]),
  };
  if (config.hasQkvBias) {
    weights.bq = full(attention, 'self_attn.q_proj.bias', [qDim]);
    weights.bk = full(attention, 'self_attn.k_proj.bias', [kvDim]);
    weights.bv = full(attention, 'self_attn.v_proj.bias', [kvDim]);
  }
  return weights;
}

/**
 * The plan a DeciLM checkpoint carries: every sublayer that is not a full one is dropped, and a
 * `replace_with_linear` one is emulated by its matrix W (y = W·norm(x)) as a rank-dim low-rank
 * emulation with down = Wᵀ and up = I, which computes the same product.
 */
export function builtInPlanOf(
  config: ModelConfig,
  deci: DeciLayout,
  read: (layer: number, suffix: string, shape: number[]) => Float32Array,
): BuiltInPlan | undefined {
  const { dim, numLayers } = config;
  const dropped = (forms: string[]): number[] => forms.flatMap((f, l) => (f === 'full' ? [] : [l]));
  const plan: BuiltInPlan = {
    format: 'deci',
    dropAttention: dropped(deci.attention),
    dropMlp: dropped(deci.mlp),
  };
  if (plan.dropAttention.length === 0 && plan.dropMlp.length === 0) return undefined;
  if (!deci.attention.includes('linear') && !deci.mlp.includes('linear')) return plan;
  const emulation: Emulation = {
    attention: Array(numLayers).fill(null),
    mlp: Array(numLayers).fill(null),
  };
  const identity = new Float32Array(dim * dim);
  for (let i = 0; i < dim; i++) identity[i * dim + i] = 1;
  for (let l = 0; l < numLayers; l++) {
    for (const [forms, target, suffix] of [
      [deci.attention, emulation.attention, DECI_LINEAR_ATTENTION],
      [deci.mlp, emulation.mlp, DECI_LINEAR_MLP],
    ] as const) {
      if (forms[l] !== 'linear') continue;
      const w = read(l, suffix, [dim, dim]);
      target[l] = { kind: 'lowrank', rank: dim, down: transpose(w, dim), up: identity };
    }
  }
  plan.emulation = emulation;
  return plan;
}

export function transpose(m: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * n);
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) out[c * n + r] = m[r * n + c]!;
  return out;
}
