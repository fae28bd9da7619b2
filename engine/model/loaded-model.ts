import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { ModelConfig } from './config.ts';
import type { ModelWeights } from './weights.ts';

/** Where a model came from; shown in logs and /v1/models. */
export interface ModelSource {
  kind: 'llama2c' | 'huggingface' | 'synthetic';
  /** File or directory it was read from; absent for synthetic models. */
  path?: string;
  /** Default served name (file stem, directory name, HF id, or "dropserve-default"). */
  id: string;
  /** One line for humans, e.g. "synthetic (seed 1234): built-in default, not a trained model". */
  description: string;
}

export interface LoadedModel {
  config: ModelConfig;
  weights: ModelWeights;
  tokenizer: Tokenizer;
  source: ModelSource;
}
