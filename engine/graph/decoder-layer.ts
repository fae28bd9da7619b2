/**
 * One decoder layer as ONNX nodes, mirroring engine/reference/forward.ts step for step:
 *   x + o_proj(GQA(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   n = rmsNorm(x)    (attention)
 *   x + down_proj(silu(gate_proj(n)) * up_proj(n))                  n = rmsNorm(x)    (MLP)
 * Node and initializer names follow module paths (`layers.3.attn.q_proj`).
 */
import type { ModelConfig } from '../model/config.ts';
import { derivedSizes } from '../model/config.ts';
import type { LayerWeights } from '../model/weights.ts';
import { GRAPH_INPUT } from './io.ts';
import type { LayerLinearStorage, LinearStorage } from './linear-weights.ts';
import { FP32_LAYER, linearInitializers, linearNode, linearPreludeNodes } from './linear-weights.ts';
import type { NodeProto, TensorProto } from './onnx-helpers.ts';
import { floatAttr, floatTensor, int64Tensor, intAttr, MS_DOMAIN, node } from './onnx-helpers.ts';

/** Shared initializers every layer reads (built once in build-graph.ts). */
export const ROPE_COS = 'rope.cos_cache'; // [maxSeqLen, headDim/2]
export const ROPE_SIN = 'rope.sin_cache'; // [maxSeqLen, headDim/2]

/** Names of one layer's initializers; all live in the main graph, and If branches read them. */
export function layerParamNames(layer: number) {
  const p = `layers.${layer}`;
  return {
    index: `${p}.index`, // int64 scalar l: selects row l of the mask and emulation inputs
    attnNorm: `${p}.attn_norm.weight`,
    wq: `${p}.attn.q_proj.weight`,
    wk: `${p}.attn.k_proj.weight`,
    wv: `${p}.attn.v_proj.weight`,
    bq: `${p}.attn.q_proj.bias`,
    bk: `${p}.attn.k_proj.bias`,
    bv: `${p}.attn.v_proj.bias`,
    wo: `${p}.attn.o_proj.weight`,
    mlpNorm: `${p}.mlp_norm.weight`,
    wGate: `${p}.mlp.gate_proj.weight`,
    wUp: `${p}.mlp.up_proj.weight`,
    wDown: `${p}.mlp.down_proj.weight`,
  };
}

export function layerInitializers(
  config: ModelConfig,
  layer: number,
  w: LayerWeights,
  linears: LayerLinearStorage = FP32_LAYER,
): TensorProto[] {
  const { dim, hiddenDim } = config;
  const { qDim, kvDim } = derivedSizes(config);
  const n = layerParamNames(layer);
  // Matrices stay (out, in) as checkpoints store them; the projections multiply by their transpose.
  const tensors = [
    int64Tensor(n.index, [], [layer]),
    floatTensor(n.attnNorm, [dim], w.attnNorm),
    ...linearInitializers(n.wq, qDim, dim, w.wq, linears.wq),
    ...linearInitializers(n.wk, kvDim, dim, w.wk, linears.wk),
    ...linearInitializers(n.wv, kvDim, dim, w.wv, linears.wv),
    ...linearInitializers(n.wo, dim, qDim, w.wo, linears.wo),
    floatTensor(n.mlpNorm, [dim], w.mlpNorm),
    ...linearInitializers(n.wGate, hiddenDim, dim, w.wGate, linears.wGate),
    ...linearInitializers(n.wUp, hiddenDim, dim, w.wUp, linears.wUp),
    ...linearInitializers(n.wDown, dim, hiddenDim, w.wDown, linears.wDown),
  ];
  if (config.hasQkvBias) {
    if (!w.bq || !w.bk || !w.bv)
      throw new RangeError(`layer ${layer}: config has q/k/v bias but weights lack it`);
    tensors.push(
      floatTensor(n.bq, [qDim], w.bq),
      floatTensor(n.bk, [kvDim], w.bk),
      floatTensor(n.bv, [kvDim], w.bv),
    );
  }
  return tensors;
}

/** Main-graph nodes the layer's weights need before the (possibly If-wrapped) sublayers read them. */
export function layerPreludeNodes(layer: number, linears: LayerLinearStorage): NodeProto[] {
  const n = layerParamNames(layer);
  return (['wq', 'wk', 'wv', 'wo', 'wGate', 'wUp', 'wDown'] as const).flatMap((name) =>
    linearPreludeNodes(n[name], linears[name]),
  );
}

/** rmsNorm(x) · weight, over the last axis. SimplifiedLayerNormalization lives in the default domain. */
export function rmsNormNode(name: string, x: string, weight: string, out: string, eps: number): NodeProto {
  return node({
    name,
    op: 'SimplifiedLayerNormalization',
    inputs: [x, weight],
    outputs: [out],
    attributes: [intAttr('axis', -1), floatAttr('epsilon', eps), intAttr('stash_type', 1)],
  });
}

/**
 * y = x · Wᵀ (+ b) on W as stored, (out, in): FusedMatMul with transB (or MatMulNBits on quantized
 * weights, linear-weights.ts), and an Add when the projection has a bias. Transposing every matrix in
 * JS instead took 0.5 s and a second copy of the weights at load for a 110M model; ORT prepacks the
 * transposed B just the same (decode speed measured equal, docs/benchmarks.md "Start-up").
 */
function projection(
  name: string,
  x: string,
  weight: string,
  storage: LinearStorage,
  bias: string | null,
  out: string,
): NodeProto[] {
  if (!bias) return [linearNode(name, x, weight, storage, out)];
  return [
    linearNode(name, x, weight, storage, `${out}_nobias`),
    node({ name: `${name}.bias_add`, op: 'Add', inputs: [`${out}_nobias`, bias], outputs: [out] }),
  ];
}

export interface AttentionOutputs {
  x: string; // [B, S, dim] residual stream after attention
  newKey: string; // [B, S, kvDim] this run's K rows, after RoPE
  newValue: string; // [B, S, kvDim] this run's V rows
}

/** The attention sublayer with its residual; also exposes this run's K/V rows for the caller's cache. */
export function attentionNodes(
  config: ModelConfig,
  layer: number,
  x: string,
  out: AttentionOutputs,
  linears: LayerLinearStorage = FP32_LAYER,
): NodeProto[] {
  const n = layerParamNames(layer);
  const p = `layers.${layer}.attn`;
  const hasBias = config.hasQkvBias;
  const rope = (name: string, input: string, numHeads: number, output: string): NodeProto =>
    node({
      name,
      op: 'RotaryEmbedding',
      domain: MS_DOMAIN,
      inputs: [input, GRAPH_INPUT.positionIds, ROPE_COS, ROPE_SIN],
      outputs: [output],
      attributes: [intAttr('interleaved', config.ropeInterleaved ? 1 : 0), intAttr('num_heads', numHeads)],
    });
  return [
    // n = rmsNorm(x)
    rmsNormNode(`layers.${layer}.attn_norm`, x, n.attnNorm, `${p}.normed`, config.rmsNormEps),
    // q, k, v projections (Qwen2 adds biases)
    ...projection(`${p}.q_proj`, `${p}.normed`, n.wq, linears.wq, hasBias ? n.bq : null, `${p}.q`),
    ...projection(`${p}.k_proj`, `${p}.normed`, n.wk, linears.wk, hasBias ? n.bk : null, `${p}.k`),
    ...projection(`${p}.v_proj`, `${p}.normed`, n.wv, linears.wv, hasBias ? n.bv : null, out.newValue),
    // RoPE outside GQA, so the rotated K rows can be fetched and cached by the caller.
    rope(`${p}.q_rope`, `${p}.q`, config.numHeads, `${p}.q_rot`),
    rope(`${p}.k_rope`, `${p}.k`, config.numKvHeads, out.newKey),
    // softmax(q·kᵀ/√D + causal) · v over past + new rows; query head h reads KV head ⌊h / kvGroup⌋.
    // present_* are required outputs of the op but unused: the caller owns the cache.
    node({
      name: `${p}.gqa`,
      op: 'GroupQueryAttention',
      domain: MS_DOMAIN,
      inputs: [
        `${p}.q_rot`,
        out.newKey,
        out.newValue,
        GRAPH_INPUT.pastKey(layer),
        GRAPH_INPUT.pastValue(layer),
        GRAPH_INPUT.seqlensK,
        GRAPH_INPUT.totalSequenceLength,
      ],
      outputs: [`${p}.attended`, `${p}.present_key`, `${p}.present_value`],
      attributes: [
        intAttr('num_heads', config.numHeads),
        intAttr('kv_num_heads', config.numKvHeads),
        floatAttr('scale', 1 / Math.sqrt(config.headDim)),
        intAttr('do_rotary', 0),
      ],
    }),
    ...projection(`${p}.o_proj`, `${p}.attended`, n.wo, linears.wo, null, `${p}.o`),
    node({ name: `${p}.residual`, op: 'Add', inputs: [x, `${p}.o`], outputs: [out.x] }),
  ];
}

/** The SwiGLU MLP sublayer with its residual: x + down(silu(gate(n)) * up(n)). */
export function mlpNodes(
  config: ModelConfig,
  layer: number,
  x: string,
  out: string,
  linears: LayerLinearStorage = FP32_LAYER,
): NodeProto[] {
  const n = layerParamNames(layer);
  const p = `layers.${layer}.mlp`;
  return [
    rmsNormNode(`layers.${layer}.mlp_norm`, x, n.mlpNorm, `${p}.normed`, config.rmsNormEps),
    ...projection(`${p}.gate_proj`, `${p}.normed`, n.wGate, linears.wGate, null, `${p}.gate`),
    ...projection(`${p}.up_proj`, `${p}.normed`, n.wUp, linears.wUp, null, `${p}.up`),
    // silu(g) = g · sigmoid(g)
    node({ name: `${p}.sigmoid`, op: 'Sigmoid', inputs: [`${p}.gate`], outputs: [`${p}.gate_sigmoid`] }),
    node({
      name: `${p}.silu`,
      op: 'Mul',
      inputs: [`${p}.gate`, `${p}.gate_sigmoid`],
      outputs: [`${p}.gate_silu`],
    }),
    node({ name: `${p}.glu`, op: 'Mul', inputs: [`${p}.gate_silu`, `${p}.up`], outputs: [`${p}.glu_out`] }),
    ...projection(`${p}.down_proj`, `${p}.glu_out`, n.wDown, linears.wDown, null, `${p}.down`),
    node({ name: `${p}.residual`, op: 'Add', inputs: [x, `${p}.down`], outputs: [out] }),
  ];
}
