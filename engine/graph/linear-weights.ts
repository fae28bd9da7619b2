/**
 * How one linear layer's weight sits in the graph and the node that multiplies by it:
 *  - fp32: the (out, in) matrix as stored, FusedMatMul transB;
 *  - fp16: the matrix as a float16 initializer, Cast to float32 in the main graph (an initializer's
 *    Cast is constant-folded when the session is created, so CPU decode computes in float32);
 *  - nbits: com.microsoft MatMulNBits on the block-quantized matrix (quantized-matrix.ts layout).
 */
import type { ModelWeights } from '../model/weights.ts';
import { LINEAR_WEIGHT_NAMES, type LinearWeightName } from '../model/weights.ts';
import { toHalfArray } from '../quant/fp16.ts';
import type { QuantizedMatrix } from '../quant/quantized-matrix.ts';
import { blocksPerRow, bytesPerBlock } from '../quant/quantized-matrix.ts';
import type { NodeProto, TensorProto } from './onnx-helpers.ts';
import { floatTensor, intAttr, MS_DOMAIN, node } from './onnx-helpers.ts';

/**
 * MatMulNBits accuracy_level: the lowest precision the CPU kernel may compute in. 4 lets it quantize
 * the activations to int8 per block and run integer dot products (MLAS "SQNBit CompInt8"), the fast
 * path for 4- and 8-bit weights; 0 dequantizes the weights to float32 inside the kernel. Measured in
 * docs/quantization.md ("accuracy_level").
 */
export const DEFAULT_ACCURACY_LEVEL = 4;

export type LinearStorage =
  | { kind: 'fp32' }
  | { kind: 'fp16' }
  | { kind: 'nbits'; matrix: QuantizedMatrix; accuracyLevel: number };

export type LayerLinearStorage = Record<LinearWeightName, LinearStorage>;

export const FP32_LINEAR: LinearStorage = { kind: 'fp32' };

export const FP32_LAYER: LayerLinearStorage = Object.fromEntries(
  LINEAR_WEIGHT_NAMES.map((name) => [name, FP32_LINEAR]),
) as LayerLinearStorage;

export function layerLinearStorage(
  weights: ModelWeights,
  layer: number,
  accuracyLevel = DEFAULT_ACCURACY_LEVEL,
): LayerLinearStorage {
  const quantized = weights.quantizedLayers?.[layer];
  const fallback: LinearStorage = weights.format === 'fp16' ? { kind: 'fp16' } : FP32_LINEAR;
  const entries = LINEAR_WEIGHT_NAMES.map((name) => {
    const matrix = quantized?.[name];
    return [name, matrix ? { kind: 'nbits', matrix, accuracyLevel } : fallback] as const;
  });
  return Object.fromEntries(entries) as LayerLinearStorage;
}

export function lmHeadStorage(weights: ModelWeights, accuracyLevel = DEFAULT_ACCURACY_LEVEL): LinearStorage {
  if (weights.lmHeadQuantized) return { kind: 'nbits', matrix: weights.lmHeadQuantized, accuracyLevel };
  return weights.lmHeadFp16 ? { kind: 'fp16' } : FP32_LINEAR;
}

const UINT8 = 2;
const FLOAT16 = 10;

/** Name of the float32 value the projection reads for an fp16 weight (the Cast's output). */
const castName = (weight: string) => `${weight}.as_float`;
const scalesName = (weight: string) => `${weight}.scales`;
const zeroPointsName = (weight: string) => `${weight}.zero_points`;

/** The initializers of one linear weight named `weight`, (rows, cols) = (out, in). */
export function linearInitializers(
  weight: string,
  rows: number,
  cols: number,
  values: Float32Array,
  storage: LinearStorage,
): TensorProto[] {
  if (storage.kind === 'fp32') return [floatTensor(weight, [rows, cols], values)];
  if (storage.kind === 'fp16') {
    if (values.length !== rows * cols)
      throw new RangeError(`${weight}: ${values.length} values, not ${rows}×${cols}`);
    const half = toHalfArray(values);
    return [{ name: weight, dims: [rows, cols], dataType: FLOAT16, rawData: new Uint8Array(half.buffer) }];
  }
  const m = storage.matrix;
  if (m.rows !== rows || m.cols !== cols)
    throw new RangeError(
      `${weight}: quantized matrix is ${m.rows}×${m.cols}, the graph wants ${rows}×${cols}`,
    );
  const nBlocks = blocksPerRow(m);
  const tensors: TensorProto[] = [
    { name: weight, dims: [rows, nBlocks, bytesPerBlock(m)], dataType: UINT8, rawData: m.data },
    floatTensor(scalesName(weight), [rows * nBlocks], m.scales),
  ];
  if (m.zeroPoints) {
    tensors.push({
      name: zeroPointsName(weight),
      dims: [m.zeroPoints.length],
      dataType: UINT8,
      rawData: m.zeroPoints,
    });
  }
  return tensors;
}

/** Main-graph nodes a weight needs before any projection reads it (the fp16 → float32 Cast). */
export function linearPreludeNodes(weight: string, storage: LinearStorage): NodeProto[] {
  if (storage.kind !== 'fp16') return [];
  return [
    node({
      name: `${weight}.cast`,
      op: 'Cast',
      inputs: [weight],
      outputs: [castName(weight)],
      attributes: [intAttr('to', 1)],
    }),
  ];
}

/** y = x · Wᵀ for W (out, in) stored as `storage`; x is [..., in]. */
export function linearNode(
  name: string,
  x: string,
  weight: string,
  storage: LinearStorage,
  out: string,
): NodeProto {
  if (storage.kind === 'nbits') {
    const m = storage.matrix;
    const inputs = [x, weight, scalesName(weight)];
    if (m.zeroPoints) inputs.push(zeroPointsName(weight));
    return node({
      name,
      op: 'MatMulNBits',
      domain: MS_DOMAIN,
      inputs,
      outputs: [out],
      attributes: [
        intAttr('K', m.cols),
        intAttr('N', m.rows),
        intAttr('bits', m.bits),
        intAttr('block_size', m.blockSize),
        intAttr('accuracy_level', storage.accuracyLevel),
      ],
    });
  }
  return node({
    name,
    op: 'FusedMatMul',
    domain: MS_DOMAIN,
    inputs: [x, storage.kind === 'fp16' ? castName(weight) : weight],
    outputs: [out],
    attributes: [intAttr('transB', 1)],
  });
}
