import type { EngineClient } from '../../engine/client.ts';
import { DropserveError } from '../../engine/errors.ts';
import type { TextGenerationRequest } from '../../engine/output/text-generation.ts';
import {
  checkPromptNotEmpty,
  checkTokenIds,
  resolveMaxTokens,
} from '../../engine/request/validate-generate.ts';
import type { GenerateRpcRequest } from './request-schemas.ts';
import { resolveVariant } from './resolve-model.ts';

/**
 * A validated gRPC GenerateRequest as the engine-level request generateText() takes. Pure apart
 * from reading the engine's model facts, tokenizer and variant list, so other transports and tests
 * can check that the same parameters make the same engine request.
 *
 * Throws DS_NOT_FOUND (unknown model), DS_INVALID_ARGUMENT (no input, a token id outside the
 * vocabulary) and DS_CONTEXT_OVERFLOW: the engine's own rules (engine/request/validate-generate.ts),
 * checked here so a bad request never queues. Limits of the moment (KV budget, queue) are the
 * engine's to check.
 */
export function toTextGenerationRequest(
  request: GenerateRpcRequest,
  engine: Pick<EngineClient, 'model' | 'tokenizer' | 'variants'>,
  requestId: string = request.request_id,
): TextGenerationRequest {
  const variant = resolveVariant(request.model, engine);
  const promptTokenIds = promptTokens(request, engine);
  const { config } = engine.model;
  checkPromptNotEmpty(promptTokenIds);
  checkTokenIds(promptTokenIds, config.vocabSize, 'prompt');
  if (request.stop_token_ids) checkTokenIds(request.stop_token_ids, config.vocabSize, 'stop_token_ids');
  // max_tokens 0 (unset in proto3): whatever the context leaves, as the HTTP API does.
  const maxTokens = resolveMaxTokens({
    contextLength: config.maxSeqLen,
    promptTokens: promptTokenIds.length,
    maxTokens: request.max_tokens || undefined,
  });
  return {
    requestId,
    variant,
    promptTokenIds,
    maxTokens,
    sampling: {
      temperature: request.temperature ?? 1,
      topP: request.top_p ?? 1,
      topK: request.top_k ?? 0,
      minP: request.min_p ?? 0,
      seed: request.seed,
      presencePenalty: request.presence_penalty,
      frequencyPenalty: request.frequency_penalty,
      repetitionPenalty: request.repetition_penalty ?? 1,
    },
    stop: request.stop,
    stopTokenIds: request.stop_token_ids,
    ignoreEos: request.ignore_eos,
    // logprobs absent: none; 0: the chosen token's; N: also the top N alternatives.
    logprobs: request.logprobs !== undefined,
    topLogprobs: request.logprobs ?? 0,
    priority: 'interactive',
    transport: 'grpc',
  };
}

function promptTokens(request: GenerateRpcRequest, engine: Pick<EngineClient, 'tokenizer'>): number[] {
  switch (request.input) {
    case 'prompt_token_ids':
      return request.prompt_token_ids?.ids ?? [];
    case 'prompt':
      return engine.tokenizer.encode(request.prompt ?? '', { addBos: request.add_bos ?? true });
    default:
      throw new DropserveError('DS_INVALID_ARGUMENT', 'set one of prompt or prompt_token_ids', {
        param: 'prompt',
      });
  }
}
