/**
 * Per-sequence dropping: each sublayer sits in an `If` on its mask bit, so one session (one copy of
 * the weights) serves every pruning level. The else-branch is the emulation of engine/graph/io.ts:
 *
 *   If attn_keep[l]:  the sublayer (decoder-layer.ts)
 *   else:             y = x + attn_emul_bias[l]                      (zeros = plain drop: one Add)
 *                     If attn_lowrank[l]: y + (rmsNorm(x) · down[l]) · up[l]
 */
import type { ModelConfig } from '../model/config.ts';
import { derivedSizes } from '../model/config.ts';
import { attentionNodes, layerParamNames, mlpNodes, rmsNormNode } from './decoder-layer.ts';
import { GRAPH_INPUT, GRAPH_OUTPUT } from './io.ts';
import type { LayerLinearStorage } from './linear-weights.ts';
import { FP32_LAYER } from './linear-weights.ts';
import type { NodeProto } from './onnx-helpers.ts';
import {
  ElemType,
  emptyFloatTensor,
  graph,
  graphAttr,
  node,
  tensorAttr,
  tensorInfo,
} from './onnx-helpers.ts';

type SublayerKind = 'attn' | 'mlp';

const MASK_INPUTS = {
  attn: {
    keep: GRAPH_INPUT.attnKeep,
    lowRank: GRAPH_INPUT.attnLowRank,
    bias: GRAPH_INPUT.attnEmulBias,
    down: GRAPH_INPUT.attnEmulDown,
    up: GRAPH_INPUT.attnEmulUp,
  },
  mlp: {
    keep: GRAPH_INPUT.mlpKeep,
    lowRank: GRAPH_INPUT.mlpLowRank,
    bias: GRAPH_INPUT.mlpEmulBias,
    down: GRAPH_INPUT.mlpEmulDown,
    up: GRAPH_INPUT.mlpEmulUp,
  },
} as const;

/** Subgraph outputs carry a type but no shape: the two branches may differ in shape. */
const floatOutput = (name: string) => tensorInfo(name, ElemType.float, null);

/** Row l of a [L] mask input as a scalar bool, for an If condition. */
function maskBit(layer: number, maskInput: string, out: string): NodeProto {
  return node({ name: out, op: 'Gather', inputs: [maskInput, layerParamNames(layer).index], outputs: [out] });
}

/** Nodes of the else-branch: x + bias[l], then the low-rank term only when attn_lowrank[l]. */
function emulationNodes(
  config: ModelConfig,
  layer: number,
  kind: SublayerKind,
  x: string,
  out: string,
): NodeProto[] {
  const inputs = MASK_INPUTS[kind];
  const names = layerParamNames(layer);
  const p = `layers.${layer}.${kind}.emul`;
  const normWeight = kind === 'attn' ? names.attnNorm : names.mlpNorm;
  const lowRankBranch = graph({
    name: `${p}.lowrank_branch`,
    nodes: [
      rmsNormNode(`${p}.norm`, x, normWeight, `${p}.normed`, config.rmsNormEps),
      node({ name: `${p}.down`, op: 'Gather', inputs: [inputs.down, names.index], outputs: [`${p}.down_l`] }),
      node({ name: `${p}.up`, op: 'Gather', inputs: [inputs.up, names.index], outputs: [`${p}.up_l`] }),
      node({
        name: `${p}.project`,
        op: 'MatMul',
        inputs: [`${p}.normed`, `${p}.down_l`],
        outputs: [`${p}.low`],
      }),
      node({ name: `${p}.expand`, op: 'MatMul', inputs: [`${p}.low`, `${p}.up_l`], outputs: [`${p}.delta`] }),
      node({
        name: `${p}.add_delta`,
        op: 'Add',
        inputs: [`${p}.biased`, `${p}.delta`],
        outputs: [`${p}.with_lowrank`],
      }),
    ],
    outputs: [floatOutput(`${p}.with_lowrank`)],
  });
  const biasOnlyBranch = graph({
    name: `${p}.bias_branch`,
    nodes: [
      node({ name: `${p}.pass`, op: 'Identity', inputs: [`${p}.biased`], outputs: [`${p}.bias_only`] }),
    ],
    outputs: [floatOutput(`${p}.bias_only`)],
  });
  return [
    node({ name: `${p}.bias`, op: 'Gather', inputs: [inputs.bias, names.index], outputs: [`${p}.bias_l`] }),
    node({ name: `${p}.add_bias`, op: 'Add', inputs: [x, `${p}.bias_l`], outputs: [`${p}.biased`] }),
    maskBit(layer, inputs.lowRank, `${p}.is_lowrank`),
    node({
      name: `${p}.lowrank_if`,
      op: 'If',
      inputs: [`${p}.is_lowrank`],
      outputs: [out],
      attributes: [graphAttr('then_branch', lowRankBranch), graphAttr('else_branch', biasOnlyBranch)],
    }),
  ];
}

/**
 * Attention l under its mask bit. Outputs the residual stream and this run's K/V rows; a dropped
 * layer yields empty K/V tensors (its past is empty too: it holds no KV).
 */
export function maskedAttentionNodes(
  config: ModelConfig,
  layer: number,
  x: string,
  out: string,
  linears: LayerLinearStorage = FP32_LAYER,
): NodeProto[] {
  const p = `layers.${layer}.attn`;
  const { kvDim } = derivedSizes(config);
  const keptBranch = graph({
    name: `${p}.kept`,
    nodes: attentionNodes(
      config,
      layer,
      x,
      { x: `${p}.out`, newKey: `${p}.k_rot`, newValue: `${p}.v` },
      linears,
    ),
    outputs: [floatOutput(`${p}.out`), floatOutput(`${p}.k_rot`), floatOutput(`${p}.v`)],
  });
  const emptyKv = (name: string) =>
    node({
      name,
      op: 'Constant',
      inputs: [],
      outputs: [name],
      attributes: [tensorAttr('value', emptyFloatTensor(name, [0, 0, kvDim]))],
    });
  const droppedBranch = graph({
    name: `${p}.dropped`,
    nodes: [
      ...emulationNodes(config, layer, 'attn', x, `${p}.emulated`),
      emptyKv(`${p}.no_key`),
      emptyKv(`${p}.no_value`),
    ],
    outputs: [floatOutput(`${p}.emulated`), floatOutput(`${p}.no_key`), floatOutput(`${p}.no_value`)],
  });
  return [
    maskBit(layer, GRAPH_INPUT.attnKeep, `${p}.keep`),
    node({
      name: `${p}.if`,
      op: 'If',
      inputs: [`${p}.keep`],
      outputs: [out, GRAPH_OUTPUT.newKey(layer), GRAPH_OUTPUT.newValue(layer)],
      attributes: [graphAttr('then_branch', keptBranch), graphAttr('else_branch', droppedBranch)],
    }),
  ];
}

/** MLP l under its mask bit. */
export function maskedMlpNodes(
  config: ModelConfig,
  layer: number,
  x: string,
  out: string,
  linears: LayerLinearStorage = FP32_LAYER,
): NodeProto[] {
  const p = `layers.${layer}.mlp`;
  const keptBranch = graph({
    name: `${p}.kept`,
    nodes: mlpNodes(config, layer, x, `${p}.out`, linears),
    outputs: [floatOutput(`${p}.out`)],
  });
  const droppedBranch = graph({
    name: `${p}.dropped`,
    nodes: emulationNodes(config, layer, 'mlp', x, `${p}.emulated`),
    outputs: [floatOutput(`${p}.emulated`)],
  });
  return [
    maskBit(layer, GRAPH_INPUT.mlpKeep, `${p}.keep`),
    node({
      name: `${p}.if`,
      op: 'If',
      inputs: [`${p}.keep`],
      outputs: [out],
      attributes: [graphAttr('then_branch', keptBranch), graphAttr('else_branch', droppedBranch)],
    }),
  ];
}
