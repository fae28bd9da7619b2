import fs from 'node:fs';
import path from 'node:path';
import { DropserveError, modelLoadError } from '../errors.ts';
import { HfTokenizer } from '../tokenizer/hf-tokenizer.ts';
import { Llama2cTokenizer } from '../tokenizer/llama2c-tokenizer.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { BUILT_IN_MODEL_ID, builtInModelPath } from './built-in-model.ts';
import type { ModelConfig } from './config.ts';
import { isGgufFile, loadGgufModel } from './gguf-loader.ts';
import { findCachedModel, looksLikeHfId } from './hf-cache.ts';
import { withTokenizerEos } from './hf-config.ts';
import { loadHuggingFaceModel } from './hf-loader.ts';
import { loadLlama2cCheckpoint } from './llama2c-loader.ts';
import type { LoadedModel } from './loaded-model.ts';
import { DEFAULT_SYNTHETIC_SEED, SYNTHETIC_MODEL_NAME, syntheticModel } from './synthetic.ts';

/**
 * `--model` resolution, in order:
 *   (none)                 the built-in default: stories260K, shipped in models/ (see built-in-model.ts)
 *   synthetic[:SEED]       random weights generated from a seed (byte tokenizer); for tests and API trials
 *   file.bin               llama2.c checkpoint; tokenizer from --tokenizer, else tok*.bin / tokenizer.bin beside it
 *   file.gguf              GGUF, llama or deci architecture (llama.cpp / ollama / LM Studio; deci = a plan export), with its embedded vocabulary
 *   directory/config.json  Hugging Face checkpoint (its tokenizer unless --tokenizer)
 *   org/name               the same, from the local HF hub cache (never downloaded)
 * A file or directory literally named "synthetic" is reached as ./synthetic.
 */

export interface LoadModelOptions {
  model?: string;
  tokenizer?: string;
  onProgress?: (message: string) => void;
}

export async function loadModel(options: LoadModelOptions = {}): Promise<LoadedModel> {
  const progress = options.onProgress ?? (() => {});
  if (options.model === undefined || options.model === '') {
    if (options.tokenizer !== undefined) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        '--tokenizer needs --model (the built-in default has its own)',
        { param: 'tokenizer' },
      );
    }
    const file = builtInModelPath();
    progress(`model: no --model given, loading the built-in default ${BUILT_IN_MODEL_ID} (${file})`);
    const model = loadLlama2c(file, undefined, progress);
    return {
      ...model,
      source: {
        ...model.source,
        builtIn: true,
        description: `built-in default: ${model.source.description}, trained on TinyStories (MIT)`,
      },
    };
  }
  const spec = options.model;
  const syntheticSeed = parseSyntheticSpec(spec);
  if (syntheticSeed !== undefined) {
    if (options.tokenizer !== undefined) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        '--tokenizer does not apply to --model synthetic (it has its own byte tokenizer)',
        { param: 'tokenizer' },
      );
    }
    const model = syntheticModel({ seed: syntheticSeed });
    progress(`model: ${model.source.description}`);
    return model;
  }
  if (fs.existsSync(spec)) {
    const stat = fs.statSync(spec);
    if (stat.isFile() && (spec.endsWith('.gguf') || isGgufFile(spec))) {
      return loadGguf(spec, options.tokenizer, progress);
    }
    if (stat.isFile() && spec.endsWith('.bin')) return loadLlama2c(spec, options.tokenizer, progress);
    if (stat.isDirectory())
      return loadHuggingFace(spec, path.basename(path.resolve(spec)), options.tokenizer, progress);
    throw modelLoadError(
      spec,
      'not a model: expected a llama2.c .bin checkpoint, a .gguf file or a Hugging Face directory with config.json',
    );
  }
  if (looksLikeHfId(spec)) {
    const snapshot = findCachedModel(spec);
    progress(`model: ${spec} found in the local Hugging Face cache at ${snapshot}`);
    return loadHuggingFace(snapshot, spec, options.tokenizer, progress);
  }
  throw modelLoadError(spec, 'no such file or directory (and not an org/name Hugging Face id)');
}

/** The seed `synthetic` / `synthetic:SEED` asks for; undefined when the spec names something else. */
function parseSyntheticSpec(spec: string): number | undefined {
  if (spec === SYNTHETIC_MODEL_NAME) return DEFAULT_SYNTHETIC_SEED;
  const prefix = `${SYNTHETIC_MODEL_NAME}:`;
  if (!spec.startsWith(prefix)) return undefined;
  const text = spec.slice(prefix.length);
  const seed = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(seed) || seed > 0xffffffff) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--model ${spec}: the seed must be an integer in 0..4294967295, got "${text}"`,
      { param: 'model' },
    );
  }
  return seed;
}

/** A tokenizer from a path: a llama2.c .bin file, or an HF directory / its tokenizer.json. */
export function loadTokenizer(tokenizerPath: string): Tokenizer {
  if (!fs.existsSync(tokenizerPath))
    throw modelLoadError(tokenizerPath, 'no such tokenizer file or directory');
  if (fs.statSync(tokenizerPath).isDirectory()) return HfTokenizer.fromDir(tokenizerPath);
  if (path.basename(tokenizerPath) === 'tokenizer.json')
    return HfTokenizer.fromDir(path.dirname(tokenizerPath));
  return Llama2cTokenizer.fromFile(tokenizerPath);
}

function loadLlama2c(
  file: string,
  tokenizerPath: string | undefined,
  progress: (message: string) => void,
): LoadedModel {
  progress(`model: reading llama2.c checkpoint ${file}`);
  const { config, weights, weightFile } = loadLlama2cCheckpoint(file);
  progress(
    `config: ${config.numLayers} layers, dim ${config.dim}, ${config.numHeads} heads (${config.numKvHeads} kv), ` +
      `vocab ${config.vocabSize}, context ${config.maxSeqLen}`,
  );
  const tokenizer = tokenizerPath
    ? loadTokenizer(tokenizerPath)
    : findLlama2cTokenizer(file, config.vocabSize);
  checkVocab(config, tokenizer, file);
  progress(`tokenizer: vocab ${tokenizer.vocabSize}`);
  const id = path.basename(file, '.bin');
  return {
    config,
    weights,
    ...(weightFile ? { weightFile } : {}),
    tokenizer,
    source: {
      kind: 'llama2c',
      path: path.resolve(file),
      id,
      description: `llama2.c checkpoint ${path.basename(file)} (${config.numLayers} layers, dim ${config.dim}, vocab ${config.vocabSize})`,
    },
  };
}

async function loadGguf(
  file: string,
  tokenizerPath: string | undefined,
  progress: (message: string) => void,
): Promise<LoadedModel> {
  progress(`model: reading GGUF ${file}`);
  const gguf = await loadGgufModel(file);
  const { config } = gguf;
  progress(
    `config: ${config.numLayers} layers, dim ${config.dim}, ${config.numHeads} heads (${config.numKvHeads} kv), ` +
      `vocab ${config.vocabSize}, context ${config.maxSeqLen}; tensors ${gguf.typeSummary}`,
  );
  for (const warning of gguf.warnings) progress(`warning: ${warning}`);
  const tokenizer = tokenizerPath ? loadTokenizer(tokenizerPath) : gguf.tokenizer;
  checkVocab(config, tokenizer, file);
  progress(
    `tokenizer: vocab ${tokenizer.vocabSize} (${tokenizerPath ? tokenizerPath : 'embedded in the GGUF'})`,
  );
  if (gguf.builtInPlan) {
    progress(
      `plan: the file leaves out attention [${gguf.builtInPlan.dropAttention.join(',')}], mlp [${gguf.builtInPlan.dropMlp.join(',')}]; every variant drops them`,
    );
  }
  return {
    ...(gguf.builtInPlan ? { builtInPlan: { ...gguf.builtInPlan, format: 'gguf' as const } } : {}),
    config,
    weights: gguf.weights,
    tokenizer,
    source: {
      kind: 'gguf',
      path: path.resolve(file),
      id: path.basename(file, '.gguf'),
      description: `GGUF ${gguf.name} (${path.basename(file)}: ${config.numLayers} layers, dim ${config.dim}, vocab ${config.vocabSize}; ${gguf.typeSummary})`,
    },
  };
}

/** tok*.bin or tokenizer.bin beside the checkpoint; with several, the one matching the model's vocab. */
function findLlama2cTokenizer(modelFile: string, modelVocab: number): Tokenizer {
  const dir = path.dirname(path.resolve(modelFile));
  const names = fs
    .readdirSync(dir)
    .filter((f) => f !== path.basename(modelFile) && (f === 'tokenizer.bin' || /^tok.*\.bin$/.test(f)))
    .sort();
  const found: { name: string; tokenizer: Llama2cTokenizer }[] = [];
  const skipped: string[] = [];
  for (const name of names) {
    try {
      found.push({ name, tokenizer: Llama2cTokenizer.fromFile(path.join(dir, name)) });
    } catch (e) {
      skipped.push(`${name} (${(e as Error).message})`);
    }
  }
  const exact = found.find((c) => c.tokenizer.vocabSize === modelVocab);
  if (exact) return exact.tokenizer;
  const fitting = found.filter((c) => c.tokenizer.vocabSize <= modelVocab);
  if (fitting.length === 1) return fitting[0]!.tokenizer;
  const seen = [...found.map((c) => `${c.name} (vocab ${c.tokenizer.vocabSize})`), ...skipped];
  throw modelLoadError(
    modelFile,
    `no llama2.c tokenizer for this model's vocab ${modelVocab} in ${dir} ` +
      `(${seen.length > 0 ? `candidates: ${seen.join('; ')}` : 'no tok*.bin or tokenizer.bin there'}); pass --tokenizer <file>`,
  );
}

function loadHuggingFace(
  dir: string,
  id: string,
  tokenizerPath: string | undefined,
  progress: (message: string) => void,
): LoadedModel {
  progress(`model: reading Hugging Face checkpoint ${dir}`);
  const { config, weights, builtInPlan } = loadHuggingFaceModel(dir, { onProgress: progress });
  // An export of a llama2.c model keeps its SentencePiece vocabulary as tokenizer.bin (no tokenizer.json).
  const llama2cTokenizer = path.join(dir, 'tokenizer.bin');
  const tokenizer = tokenizerPath
    ? loadTokenizer(tokenizerPath)
    : !fs.existsSync(path.join(dir, 'tokenizer.json')) && fs.existsSync(llama2cTokenizer)
      ? Llama2cTokenizer.fromFile(llama2cTokenizer)
      : HfTokenizer.fromDir(dir, { bosTokenId: config.bosTokenId, eosTokenIds: config.eosTokenIds });
  checkVocab(config, tokenizer, dir);
  withTokenizerEos(config, tokenizer.eosTokenIds, dir);
  progress(`tokenizer: vocab ${tokenizer.vocabSize}`);
  if (builtInPlan) {
    progress(
      `plan: DeciLM export drops attention [${builtInPlan.dropAttention}] and MLP [${builtInPlan.dropMlp}] in every variant`,
    );
  }
  const kind = builtInPlan ? `DeciLM (${config.architecture} with a built-in plan)` : config.architecture;
  return {
    config,
    weights,
    tokenizer,
    ...(builtInPlan ? { builtInPlan } : {}),
    source: {
      kind: 'huggingface',
      path: path.resolve(dir),
      id,
      description: `Hugging Face ${kind} ${id} (${config.numLayers} layers, dim ${config.dim}, vocab ${config.vocabSize})`,
    },
  };
}

/** The tokenizer may have fewer ids than the embedding (padded vocabularies), never more. */
function checkVocab(config: ModelConfig, tokenizer: Tokenizer, where: string): void {
  if (tokenizer.vocabSize > config.vocabSize) {
    throw modelLoadError(
      where,
      `tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${config.vocabSize}; ` +
        'they do not belong together (pass the matching --tokenizer)',
    );
  }
}
