import fs from 'node:fs';
import path from 'node:path';
import { DropserveError } from '../../engine/errors.ts';
import type { ModelConfig } from '../../engine/model/config.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import type { ModelWeights } from '../../engine/model/weights.ts';
import { Llama2cTokenizer } from '../../engine/tokenizer/llama2c-tokenizer.ts';
import { halfSplitRopeRows } from './rope-rows.ts';

/** A loaded model in Hugging Face's layout, and the tokenizer files that go beside it. */
export interface ExportableModel {
  config: ModelConfig;
  weights: ModelWeights;
  /** [source file, name in the export]. */
  tokenizerFiles: [string, string][];
}

const HF_TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'added_tokens.json',
  'vocab.json',
  'merges.txt',
];

/**
 * llama2.c checkpoints get their q/k rows reordered for rotate-half RoPE, and their SentencePiece
 * vocabulary copied as tokenizer.bin (dropserve loads it from there; other engines need a
 * tokenizer.json, which a llama2.c vocabulary does not carry).
 */
export function exportableModel(model: LoadedModel, tokenizerPath: string | undefined): ExportableModel {
  if (model.builtInPlan) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `${model.source.id} is already an export of a plan; export from the full model instead`,
    );
  }
  const { source, config, weights } = model;
  if (source.kind === 'huggingface' && source.path) {
    const dir = source.path;
    const tokenizerFiles = HF_TOKENIZER_FILES.filter((f) => fs.existsSync(path.join(dir, f))).map(
      (f): [string, string] => [path.join(dir, f), f],
    );
    return { config, weights, tokenizerFiles };
  }
  if (source.kind === 'llama2c' && source.path) {
    const { numHeads, numKvHeads, headDim } = config;
    const layers = weights.layers.map((layer) => ({
      ...layer,
      wq: halfSplitRopeRows(layer.wq, numHeads, headDim),
      wk: halfSplitRopeRows(layer.wk, numKvHeads, headDim),
    }));
    return {
      config: { ...config, ropeInterleaved: false },
      weights: { ...weights, layers },
      tokenizerFiles: [[tokenizerPath ?? llama2cTokenizerBeside(source.path, model), 'tokenizer.bin']],
    };
  }
  throw new DropserveError(
    'DS_UNSUPPORTED',
    `prune export: --model must be a llama2.c checkpoint or a Hugging Face directory (got a ${source.kind} model)`,
    { param: 'model' },
  );
}

function llama2cTokenizerBeside(modelFile: string, model: LoadedModel): string {
  const dir = path.dirname(modelFile);
  for (const name of fs.readdirSync(dir).sort()) {
    if (name !== 'tokenizer.bin' && !/^tok.*\.bin$/.test(name)) continue;
    try {
      if (Llama2cTokenizer.fromFile(path.join(dir, name)).vocabSize === model.tokenizer.vocabSize) {
        return path.join(dir, name);
      }
    } catch {
      // Not a tokenizer; keep looking.
    }
  }
  throw new DropserveError(
    'DS_INVALID_ARGUMENT',
    `prune export: no llama2.c tokenizer beside ${modelFile}; pass --tokenizer`,
    { param: 'tokenizer' },
  );
}
