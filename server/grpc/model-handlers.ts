import type * as grpc from '@grpc/grpc-js';
import type { EngineClient, VariantInfo } from '../../engine/client.ts';
import { checkTokenIds } from '../../engine/request/validate-generate.ts';
import { type AdaptiveView, variantLoadView } from '../admin/variants/variant-load.ts';
import type { ExperimentRouter } from '../experiments/experiment-router.ts';
import { type HandlerContext, unaryHandler } from './handler-kit.ts';
import { detokenizeRequestSchema, parseMessage, tokenizeRequestSchema } from './request-schemas.ts';
import { resolveVariant } from './resolve-model.ts';

/** Message shapes of proto/dropserve.proto (snake_case). */
export interface ModelInfoMessage {
  id: string;
  base: string;
  drop_attention: number[];
  drop_mlp: number[];
  has_emulation: boolean;
  kv_bytes_per_token: number;
  kv_cache_usage_perc: number;
  kv_cache_bytes_used: number;
  kv_cache_bytes_allocated: number;
  kv_cache_budget_bytes: number;
  kv_block_tokens: number;
  kv_cache_placement: string;
  kv_admission: string;
  num_preemptions: number;
  requests_running: number;
  requests_waiting: number;
  max_context: number;
  num_layers: number;
  created: number;
  weight_bytes_per_token: number;
  weight_format: string;
  /** Only on adaptive variants. */
  adaptive?: AdaptiveView;
}

export interface ExperimentInfoMessage {
  name: string;
  arms: { variant: string; weight: number }[];
}

export interface ListModelsResponseMessage {
  models: ModelInfoMessage[];
  experiments: ExperimentInfoMessage[];
}

export interface TokenizeResponseMessage {
  token_ids: number[];
  tokens: string[];
  count: number;
  max_context: number;
}

export interface DetokenizeResponseMessage {
  text: string;
}

export interface ModelHandlerContext extends HandlerContext {
  engine: EngineClient;
  experiments?: ExperimentRouter;
}

export function listModelsHandler(
  context: ModelHandlerContext,
): grpc.handleUnaryCall<unknown, ListModelsResponseMessage> {
  return unaryHandler('ListModels', context, async () => ({
    models: context.engine.variants().map((v) => modelInfoMessage(v, context.engine)),
    experiments: (context.experiments?.list() ?? []).map((e) => ({
      name: e.name,
      arms: e.arms.map((a) => ({ variant: a.variant, weight: a.weight })),
    })),
  }));
}

export function modelInfoMessage(
  variant: VariantInfo,
  engine: Pick<EngineClient, 'model'>,
): ModelInfoMessage {
  const { config, createdAt } = engine.model;
  return {
    ...variantLoadView(variant),
    has_emulation: variant.spec.emulation !== undefined,
    max_context: config.maxSeqLen,
    num_layers: config.numLayers,
    created: createdAt,
  };
}

export function tokenizeHandler(
  context: ModelHandlerContext,
): grpc.handleUnaryCall<unknown, TokenizeResponseMessage> {
  return unaryHandler('Tokenize', context, async (call) => {
    const request = parseMessage(tokenizeRequestSchema, call.request);
    // Every variant shares the full model's tokenizer; the name is still checked so typos surface.
    resolveVariant(request.model, context.engine);
    const { tokenizer } = context.engine;
    const ids = tokenizer.encode(request.text, { addBos: request.add_bos ?? true });
    return {
      token_ids: ids,
      tokens: ids.map((id) => tokenizer.tokenText(id)),
      count: ids.length,
      max_context: context.engine.model.config.maxSeqLen,
    };
  });
}

export function detokenizeHandler(
  context: ModelHandlerContext,
): grpc.handleUnaryCall<unknown, DetokenizeResponseMessage> {
  return unaryHandler('Detokenize', context, async (call) => {
    const request = parseMessage(detokenizeRequestSchema, call.request);
    resolveVariant(request.model, context.engine);
    const { tokenizer } = context.engine;
    checkTokenIds(request.token_ids, tokenizer.vocabSize, 'token_ids');
    return { text: tokenizer.decode(request.token_ids) };
  });
}
