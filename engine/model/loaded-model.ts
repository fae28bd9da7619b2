import type { DropSpec } from '../plan/plan.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { ModelConfig } from './config.ts';
import type { WeightFileImage } from './weight-file.ts';
import type { ModelWeights } from './weights.ts';

/** Where a model came from; shown in logs and /v1/models. */
export interface ModelSource {
  kind: 'llama2c' | 'huggingface' | 'synthetic' | 'gguf';
  /** File or directory it was read from; absent for synthetic models. */
  path?: string;
  /** Default served name (file stem, directory name, HF id, or "synthetic"). */
  id: string;
  /** One line for humans, e.g. "built-in default: llama2.c checkpoint stories260K.bin (…)". */
  description: string;
  /** Loaded because no --model was given (the stories260K checkpoint shipped in models/). */
  builtIn?: boolean;
}

export interface LoadedModel {
  config: ModelConfig;
  weights: ModelWeights;
  /** The weights are views of this checkpoint image (llama2.c): sessions map the file itself. */
  weightFile?: WeightFileImage;
  tokenizer: Tokenizer;
  source: ModelSource;
  /**
   * The pruning plan a file carries (a `deci` or `gguf` export of a plan): those sublayers have no
   * weights, so every served variant drops them (and applies their linear replacements) on top of its own.
   */
  builtInPlan?: BuiltInPlan;
}

export interface BuiltInPlan extends DropSpec {
  /** Export format the plan was read from. */
  format: 'deci' | 'gguf';
}
