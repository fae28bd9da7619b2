/** `--weights`, `--quant-block`, `--quantize-lm-head`: one parser for serve, generate, prune eval and the benches. */
import { DropserveError } from '../errors.ts';
import type { LoadedModel } from '../model/loaded-model.ts';
import type { WeightFormat } from '../model/weights.ts';
import type { WeightOptions } from './quantize-weights.ts';
import { applyWeightFormat, DEFAULT_QUANT_BLOCK, WEIGHT_FORMATS } from './quantize-weights.ts';

/** node:util parseArgs option specs. */
export const WEIGHT_FLAG_SPECS = {
  weights: { type: 'string' },
  'quant-block': { type: 'string' },
  'quantize-lm-head': { type: 'boolean' },
} as const;

export const WEIGHT_FLAGS_HELP = `  --weights fp32|fp16|int8|int4   storage of the linear layers (default: as the file stores them,
                          fp32 for float checkpoints, int8/int4 for Q8_0/Q4_0 GGUF); int8/int4 are
                          quantized at load (round-to-nearest, per-block scales) into MatMulNBits
  --quant-block N         values per scale along the input dim for int8/int4 (default ${DEFAULT_QUANT_BLOCK})
  --quantize-lm-head      also quantize lm_head (embeddings and norms always stay float32)`;

export interface WeightFlagValues {
  weights?: string;
  'quant-block'?: string;
  'quantize-lm-head'?: boolean;
}

export function parseWeightFlags(values: WeightFlagValues): WeightOptions {
  const format = (values.weights ?? 'fp32') as WeightFormat;
  if (!WEIGHT_FORMATS.includes(format)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--weights must be one of ${WEIGHT_FORMATS.join(', ')}, got "${values.weights}"`,
    );
  }
  const blockText = values['quant-block'] ?? String(DEFAULT_QUANT_BLOCK);
  const blockSize = Number(blockText);
  if (!/^\d+$/.test(blockText) || blockSize < 16 || (blockSize & (blockSize - 1)) !== 0 || blockSize > 4096) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--quant-block must be a power of two from 16 to 4096 (MatMulNBits block_size), got "${blockText}"`,
    );
  }
  if (values['quant-block'] !== undefined && format !== 'int8' && format !== 'int4') {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--quant-block applies to --weights int8|int4, not ${format}`,
    );
  }
  return {
    format,
    blockSize,
    quantizeLmHead: values['quantize-lm-head'] === true,
    ...(values.weights === undefined && values['quantize-lm-head'] !== true ? { asStored: true } : {}),
  };
}

/**
 * The model with its linear layers stored as asked (fp32: the model itself). A quantized model no
 * longer maps its checkpoint file: onnxruntime takes initializers from a file or from memory, not
 * both, and the new matrices would otherwise be inlined into a protobuf capped at 2 GB.
 */
export function withWeightOptions(model: LoadedModel, options: WeightOptions): LoadedModel {
  if (options.asStored) return model;
  if (options.format === 'fp32' && !model.weights.quantizedLayers) return model;
  const { weightFile: _mappedFile, ...rest } = model;
  return { ...rest, weights: applyWeightFormat(model.config, model.weights, options) };
}
