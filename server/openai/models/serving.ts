import type { EngineClient, VariantInfo } from '../../../engine/client.ts';

/** One OpenAI model object; vLLM's `root` (where it came from) and `parent` (the base of a variant). */
export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: 'dropserve';
  root: string;
  parent: string | null;
  max_model_len: number;
}

export function modelCardOf(engine: EngineClient, variant: VariantInfo): ModelCard {
  const { model } = engine;
  return {
    id: variant.id,
    object: 'model',
    created: model.createdAt,
    owned_by: 'dropserve',
    root: model.source.path ?? model.source.id,
    parent: variant.id === variant.base ? null : variant.base,
    max_model_len: model.config.maxSeqLen,
  };
}

export function listModels(engine: EngineClient): { object: 'list'; data: ModelCard[] } {
  return { object: 'list', data: engine.variants().map((v) => modelCardOf(engine, v)) };
}
