/**
 * The whole model as one ONNX graph (I/O contract: engine/graph/io.ts):
 *
 *   hidden_0 = embed_tokens[input_ids]
 *   for l: hidden_2l+1 = attention l or its emulation;  hidden_2l+2 = MLP l or its emulation
 *   logits = lm_head(rmsNorm(hidden_2L) at rows logits_index)
 */
import path from 'node:path';
import { DropserveError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import { derivedSizes, ropeInverseFrequencies } from '../model/config.ts';
import type { WeightFileImage } from '../model/weight-file.ts';
import type { ModelWeights } from '../model/weights.ts';
import type { PhaseClock } from '../startup-phases.ts';
import {
  attentionNodes,
  layerInitializers,
  layerPreludeNodes,
  mlpNodes,
  ROPE_COS,
  ROPE_SIN,
  rmsNormNode,
} from './decoder-layer.ts';
import type { SublayerMask } from './io.ts';
import { GRAPH_INPUT, GRAPH_OUTPUT } from './io.ts';
import { type KvDtype, withFp16Kv } from './kv-dtype.ts';
import {
  DEFAULT_ACCURACY_LEVEL,
  layerLinearStorage,
  linearInitializers,
  linearNode,
  linearPreludeNodes,
  lmHeadStorage,
} from './linear-weights.ts';
import type {
  ExternalWeightFile,
  GraphProto,
  NodeProto,
  TensorProto,
  ValueInfoProto,
} from './onnx-helpers.ts';
import {
  ElemType,
  encodeModel,
  externalizeInitializers,
  floatTensor,
  graph,
  int64Tensor,
  intAttr,
  node,
  pointInitializersAtFile,
  tensorInfo,
} from './onnx-helpers.ts';
import { maskedAttentionNodes, maskedMlpNodes } from './sublayer-switch.ts';

export interface BuildGraphOptions {
  /** Add hidden_<k> outputs: the residual stream after every sublayer. */
  outputHiddenStates?: boolean;
  /**
   * Build a graph where these dropped sublayers are simply absent and the kept ones are not wrapped
   * in If (no mask or emulation inputs; no past inputs or new K/V outputs for dropped attention).
   * Used to check that the masked graph equals a pruned one.
   */
  staticDrop?: SublayerMask;
  /** Laps 'graph build' and 'protobuf encode' (the start-up breakdown). */
  clock?: PhaseClock;
  /** The weights are views of this file's image: point the initializers at the file (see weight-file.ts). */
  weightFile?: WeightFileImage;
  /** MatMulNBits accuracy_level for quantized linears (linear-weights.ts); benches compare levels. */
  accuracyLevel?: number;
  /** Element type of past_* inputs and new_* outputs (kv-dtype.ts); fp32 unless `--kv-dtype fp16`. */
  kvDtype?: KvDtype;
}

const EMBEDDING = 'embed_tokens.weight'; // [vocab, dim]
const LM_HEAD = 'lm_head.weight'; // [vocab, dim], untied models only: tied ones read EMBEDDING
const FINAL_NORM = 'norm.weight'; // [dim]

/** Residual stream value after sublayer k (0 = embedding). */
const hidden = (k: number): string => GRAPH_OUTPUT.hidden(k);

/** Serialized ModelProto (IR 8, opsets '' 17 and com.microsoft 1), weights inlined (< 2 GB only). */
export function buildModelGraph(
  config: ModelConfig,
  weights: ModelWeights,
  options: BuildGraphOptions = {},
): Uint8Array {
  return encodeModel(buildMainGraph(config, weights, options));
}

/**
 * The same model with its weights as in-memory external data: a small protobuf plus one buffer per
 * weight tensor (views of the weight arrays, not copies), for InferenceSession's `externalData`.
 * Works at any model size.
 */
export function buildModelGraphWithExternalWeights(
  config: ModelConfig,
  weights: ModelWeights,
  options: BuildGraphOptions = {},
): { model: Uint8Array; externalData: ExternalWeightFile[] } {
  const built = buildMainGraph(config, weights, options);
  const mainGraph = options.kvDtype === 'fp16' ? withFp16Kv(built, config.numLayers) : built;
  options.clock?.lap('graph build');
  const { weightFile } = options;
  let externalData: ExternalWeightFile[] = [];
  if (weightFile) pointInitializersAtFile(mainGraph, weightFile.image, path.basename(weightFile.path));
  else externalData = externalizeInitializers(mainGraph);
  const model = encodeModel(mainGraph);
  options.clock?.lap('protobuf encode');
  return { model, externalData };
}

function buildMainGraph(config: ModelConfig, weights: ModelWeights, options: BuildGraphOptions): GraphProto {
  checkGraphConstraints(config, weights);
  const staticDrop = options.staticDrop;
  const isAttnKept = (l: number) => staticDrop?.attnKeep[l] ?? true;
  const isMlpKept = (l: number) => staticDrop?.mlpKeep[l] ?? true;
  const { numLayers } = config;
  const accuracyLevel = options.accuracyLevel ?? DEFAULT_ACCURACY_LEVEL;

  const nodes: NodeProto[] = [
    node({
      name: 'embed_tokens',
      op: 'Gather',
      inputs: [EMBEDDING, GRAPH_INPUT.inputIds],
      outputs: [hidden(0)],
    }),
  ];
  const initializers: TensorProto[] = [
    floatTensor(EMBEDDING, [config.vocabSize, config.dim], weights.tokenEmbedding),
  ];
  initializers.push(...ropeTables(config));

  for (let l = 0; l < numLayers; l++) {
    const linears = layerLinearStorage(weights, l, accuracyLevel);
    initializers.push(...layerInitializers(config, l, weights.layers[l]!, linears));
    nodes.push(...layerPreludeNodes(l, linears));
    const [x, afterAttn, afterMlp] = [hidden(2 * l), hidden(2 * l + 1), hidden(2 * l + 2)];
    if (!staticDrop) {
      nodes.push(
        ...maskedAttentionNodes(config, l, x, afterAttn, linears),
        ...maskedMlpNodes(config, l, afterAttn, afterMlp, linears),
      );
      continue;
    }
    if (isAttnKept(l)) {
      const kv = { x: afterAttn, newKey: GRAPH_OUTPUT.newKey(l), newValue: GRAPH_OUTPUT.newValue(l) };
      nodes.push(...attentionNodes(config, l, x, kv, linears));
    } else {
      nodes.push(identity(`layers.${l}.attn.skip`, x, afterAttn));
    }
    if (isMlpKept(l)) nodes.push(...mlpNodes(config, l, afterAttn, afterMlp, linears));
    else nodes.push(identity(`layers.${l}.mlp.skip`, afterAttn, afterMlp));
  }

  const head = headNodes(config, weights, accuracyLevel);
  nodes.push(...head.nodes);
  initializers.push(...head.initializers);

  return graph({
    name: 'dropserve',
    nodes,
    initializers,
    inputs: graphInputs(config, isAttnKept, !staticDrop),
    outputs: graphOutputs(config, isAttnKept, !staticDrop, options.outputHiddenStates ?? false),
  });
}

function identity(name: string, x: string, out: string): NodeProto {
  return node({ name, op: 'Identity', inputs: [x], outputs: [out] });
}

/** cos/sin of position · invFreq for every position the model may see: [maxSeqLen, headDim/2]. */
function ropeTables(config: ModelConfig): TensorProto[] {
  const invFreq = ropeInverseFrequencies(config);
  const half = invFreq.length;
  const cos = new Float32Array(config.maxSeqLen * half);
  const sin = new Float32Array(config.maxSeqLen * half);
  for (let pos = 0; pos < config.maxSeqLen; pos++) {
    for (let i = 0; i < half; i++) {
      cos[pos * half + i] = Math.cos(pos * invFreq[i]!);
      sin[pos * half + i] = Math.sin(pos * invFreq[i]!);
    }
  }
  return [
    floatTensor(ROPE_COS, [config.maxSeqLen, half], cos),
    floatTensor(ROPE_SIN, [config.maxSeqLen, half], sin),
  ];
}

/**
 * Final norm, the scored rows, and lm_head as Gemm(transB=1) on the [vocab, dim] table as stored:
 * a tied model multiplies by the embedding table itself, so the table exists once. Measured on the
 * 6-layer dim-288 vocab-32000 shape: Gemm transB=1 and MatMul on a transposed copy cost the same
 * per decode step (3.70 vs 3.79 ms CPU, medians of interleaved rounds).
 */
function headNodes(
  config: ModelConfig,
  weights: ModelWeights,
  accuracyLevel: number,
): { nodes: NodeProto[]; initializers: TensorProto[] } {
  const storage = lmHeadStorage(weights, accuracyLevel);
  // A quantized (or fp16) head is a matrix of its own; the embedding Gather keeps the float32 table.
  const isTied = weights.lmHead === weights.tokenEmbedding && storage.kind === 'fp32';
  const nodes = [
    rmsNormNode('norm', hidden(2 * config.numLayers), FINAL_NORM, 'final_normed', config.rmsNormEps),
    node({
      name: 'flatten_rows',
      op: 'Reshape',
      inputs: ['final_normed', 'flatten_rows.shape'],
      outputs: ['final_rows'],
    }),
    node({
      name: 'logits_rows',
      op: 'Gather',
      inputs: ['final_rows', GRAPH_INPUT.logitsIndex],
      outputs: ['scored_rows'],
      attributes: [intAttr('axis', 0)],
    }),
    ...linearPreludeNodes(LM_HEAD, storage),
    storage.kind === 'fp32'
      ? node({
          name: 'lm_head',
          op: 'Gemm',
          inputs: ['scored_rows', isTied ? EMBEDDING : LM_HEAD],
          outputs: [GRAPH_OUTPUT.logits],
          attributes: [intAttr('transB', 1)],
        })
      : linearNode('lm_head', 'scored_rows', LM_HEAD, storage, GRAPH_OUTPUT.logits),
  ];
  const initializers = [
    floatTensor(FINAL_NORM, [config.dim], weights.finalNorm),
    int64Tensor('flatten_rows.shape', [2], [-1, config.dim]),
  ];
  if (!isTied)
    initializers.push(...linearInitializers(LM_HEAD, config.vocabSize, config.dim, weights.lmHead, storage));
  return { nodes, initializers };
}

function graphInputs(
  config: ModelConfig,
  isAttnKept: (l: number) => boolean,
  isMasked: boolean,
): ValueInfoProto[] {
  const { numLayers: L, dim, numKvHeads, headDim } = config;
  const inputs = [
    tensorInfo(GRAPH_INPUT.inputIds, ElemType.int64, ['batch', 'seq']),
    tensorInfo(GRAPH_INPUT.positionIds, ElemType.int64, ['batch', 'seq']),
  ];
  if (isMasked) {
    inputs.push(
      tensorInfo(GRAPH_INPUT.attnKeep, ElemType.bool, [L]),
      tensorInfo(GRAPH_INPUT.mlpKeep, ElemType.bool, [L]),
      tensorInfo(GRAPH_INPUT.attnLowRank, ElemType.bool, [L]),
      tensorInfo(GRAPH_INPUT.mlpLowRank, ElemType.bool, [L]),
      tensorInfo(GRAPH_INPUT.attnEmulBias, ElemType.float, [L, dim]),
      tensorInfo(GRAPH_INPUT.mlpEmulBias, ElemType.float, [L, dim]),
      tensorInfo(GRAPH_INPUT.attnEmulDown, ElemType.float, [L, dim, 'attn_emul_rank']),
      tensorInfo(GRAPH_INPUT.mlpEmulDown, ElemType.float, [L, dim, 'mlp_emul_rank']),
      tensorInfo(GRAPH_INPUT.attnEmulUp, ElemType.float, [L, 'attn_emul_rank', dim]),
      tensorInfo(GRAPH_INPUT.mlpEmulUp, ElemType.float, [L, 'mlp_emul_rank', dim]),
    );
  }
  inputs.push(
    tensorInfo(GRAPH_INPUT.seqlensK, ElemType.int32, ['batch']),
    tensorInfo(GRAPH_INPUT.totalSequenceLength, ElemType.int32, []),
  );
  for (let l = 0; l < L; l++) {
    if (!isAttnKept(l)) continue;
    const pastShape = ['batch', numKvHeads, `past_len_${l}`, headDim];
    inputs.push(
      tensorInfo(GRAPH_INPUT.pastKey(l), ElemType.float, pastShape),
      tensorInfo(GRAPH_INPUT.pastValue(l), ElemType.float, pastShape),
    );
  }
  inputs.push(tensorInfo(GRAPH_INPUT.logitsIndex, ElemType.int64, ['num_logits']));
  return inputs;
}

function graphOutputs(
  config: ModelConfig,
  isAttnKept: (l: number) => boolean,
  isMasked: boolean,
  hasHiddenStates: boolean,
): ValueInfoProto[] {
  const { kvDim } = derivedSizes(config);
  const outputs = [tensorInfo(GRAPH_OUTPUT.logits, ElemType.float, ['num_logits', config.vocabSize])];
  // In the masked graph a dropped layer's K/V rows are empty, so their shape is left open.
  const kvShape = isMasked ? null : ['batch', 'seq', kvDim];
  for (let l = 0; l < config.numLayers; l++) {
    if (!isAttnKept(l)) continue;
    outputs.push(
      tensorInfo(GRAPH_OUTPUT.newKey(l), ElemType.float, kvShape),
      tensorInfo(GRAPH_OUTPUT.newValue(l), ElemType.float, kvShape),
    );
  }
  if (hasHiddenStates) {
    for (let k = 0; k <= 2 * config.numLayers; k++) {
      outputs.push(tensorInfo(hidden(k), ElemType.float, ['batch', 'seq', config.dim]));
    }
  }
  return outputs;
}

/** Fails early, with the reason, on shapes ORT's GroupQueryAttention / RotaryEmbedding kernels reject. */
function checkGraphConstraints(config: ModelConfig, weights: ModelWeights): void {
  if (config.headDim % 8 !== 0) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `head_dim ${config.headDim}: GroupQueryAttention needs a multiple of 8`,
    );
  }
  if (config.numHeads % config.numKvHeads !== 0) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `num_heads ${config.numHeads} must be a multiple of num_kv_heads ${config.numKvHeads}`,
    );
  }
  if (weights.layers.length !== config.numLayers) {
    throw new DropserveError(
      'DS_MODEL_LOAD',
      `weights have ${weights.layers.length} layers, config says ${config.numLayers}`,
    );
  }
}
