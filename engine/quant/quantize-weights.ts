/**
 * `--weights`: turns a model's float32 linear layers into the storage the graph reads. int8/int4
 * quantize every q/k/v/o and gate/up/down projection (and lm_head with `--quantize-lm-head`) by
 * round-to-nearest at load; fp16 only marks the weights, the graph builder stores them as halves.
 * Embeddings and norms are never touched. The float32 arrays are left as they are (for a llama2.c
 * checkpoint they are views of the file): `dequantizedWeights` gives what the session computes with.
 */
import type { ModelConfig } from '../model/config.ts';
import { derivedSizes } from '../model/config.ts';
import type {
  LayerWeights,
  LinearWeightName,
  ModelWeights,
  QuantizedLinears,
  WeightFormat,
} from '../model/weights.ts';
import { LINEAR_WEIGHT_NAMES } from '../model/weights.ts';
import { roundThroughHalf } from './fp16.ts';
import { dequantize } from './quantized-matrix.ts';
import { quantizeRtn } from './rtn.ts';

export const WEIGHT_FORMATS: readonly WeightFormat[] = ['fp32', 'fp16', 'int8', 'int4'];
export const DEFAULT_QUANT_BLOCK = 32;

export interface WeightOptions {
  format: WeightFormat;
  /** Values per scale along the input dim (`--quant-block`): a power of two ≥ 16. */
  blockSize: number;
  /** Also quantize lm_head (`--quantize-lm-head`); the embedding table stays float32 regardless. */
  quantizeLmHead: boolean;
  /**
   * No `--weights` given: the model keeps the storage its file has (a Q8_0/Q4_0 GGUF stays int8/int4,
   * as llama.cpp serves it; float checkpoints stay fp32). `format` then only names the fallback.
   */
  asStored?: boolean;
}

export const DEFAULT_WEIGHT_OPTIONS: WeightOptions = {
  format: 'fp32',
  blockSize: DEFAULT_QUANT_BLOCK,
  quantizeLmHead: false,
};

/**
 * Zero points per block for int4 (asymmetric range) but not int8. Measured over every linear of the
 * trained checkpoints, block 32 (docs/quantization.md): int4's relative RMS round-trip error falls
 * from 9.5% to 7.9% (stories260K) and 9.7% to 8.1% (tinystories-656K) for one nibble per 32 values;
 * int8's is already 0.5% either way, not worth a byte per block.
 */
export const ZERO_POINTS: Record<4 | 8, boolean> = { 4: true, 8: false };

/** (rows, cols) = (out, in) of each linear of a layer. */
export function linearShape(config: ModelConfig, name: LinearWeightName): [number, number] {
  const { dim, hiddenDim } = config;
  const { qDim, kvDim } = derivedSizes(config);
  switch (name) {
    case 'wq':
      return [qDim, dim];
    case 'wk':
    case 'wv':
      return [kvDim, dim];
    case 'wo':
      return [dim, qDim];
    case 'wGate':
    case 'wUp':
      return [hiddenDim, dim];
    case 'wDown':
      return [dim, hiddenDim];
  }
}

export function checkWeightOptions(options: WeightOptions): void {
  if (!WEIGHT_FORMATS.includes(options.format))
    throw new RangeError(`weights must be one of ${WEIGHT_FORMATS.join(', ')}, got ${options.format}`);
  const b = options.blockSize;
  if (!Number.isInteger(b) || b < 16 || (b & (b - 1)) !== 0)
    throw new RangeError(`quant block must be a power of two ≥ 16, got ${b}`);
}

/** The weights with their linears stored as `options` asks; float32 arrays are shared, not copied. */
export function applyWeightFormat(
  config: ModelConfig,
  weights: ModelWeights,
  options: WeightOptions,
): ModelWeights {
  checkWeightOptions(options);
  const { format } = options;
  if (format === 'fp32' || format === 'fp16') {
    const { quantizedLayers: _q, lmHeadQuantized: _h, ...rest } = weights;
    return { ...rest, format, ...(format === 'fp16' && options.quantizeLmHead ? { lmHeadFp16: true } : {}) };
  }
  const bits = format === 'int8' ? 8 : 4;
  const rtn = { bits, blockSize: options.blockSize, zeroPoints: ZERO_POINTS[bits] } as const;
  const quantizedLayers: QuantizedLinears[] = weights.layers.map((layer, l) => {
    const given = weights.quantizedLayers?.[l] ?? {};
    const out: QuantizedLinears = {};
    for (const name of LINEAR_WEIGHT_NAMES) {
      // Already-quantized matrices of this width (a GGUF Q8_0/Q4_0 tensor) are kept as they come.
      const existing = given[name];
      if (existing && existing.bits === bits) out[name] = existing;
      else out[name] = quantizeRtn(layer[name], ...linearShape(config, name), rtn);
    }
    return out;
  });
  const result: ModelWeights = { ...weights, format, quantizedLayers };
  delete result.lmHeadQuantized;
  if (options.quantizeLmHead) {
    const existing = weights.lmHeadQuantized;
    result.lmHeadQuantized =
      existing && existing.bits === bits
        ? existing
        : quantizeRtn(weights.lmHead, config.vocabSize, config.dim, rtn);
  }
  return result;
}

/** What the session multiplies by: every quantized (or fp16) linear replaced by its dequantized values. */
export function dequantizedWeights(weights: ModelWeights): ModelWeights {
  const layers: LayerWeights[] = weights.layers.map((layer, l) => {
    const copy = { ...layer };
    const quantized = weights.quantizedLayers?.[l];
    for (const name of LINEAR_WEIGHT_NAMES) {
      const q = quantized?.[name];
      if (q) copy[name] = dequantize(q);
      else if (weights.format === 'fp16') copy[name] = roundThroughHalf(layer[name]);
    }
    return copy;
  });
  let lmHead = weights.lmHead;
  if (weights.lmHeadQuantized) lmHead = dequantize(weights.lmHeadQuantized);
  else if (weights.lmHeadFp16) lmHead = roundThroughHalf(weights.lmHead);
  return { tokenEmbedding: weights.tokenEmbedding, layers, finalNorm: weights.finalNorm, lmHead };
}
