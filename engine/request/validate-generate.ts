import type { GenerateRequest } from '../client.ts';
import { DropserveError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';

/**
 * The rules every generate request obeys, in one place: the engine core checks each request with
 * validateGenerateRequest, and the transports call the same rules before any engine work so that a
 * bad request is refused with the right `param` (and, over HTTP, OpenAI's wording) without queueing.
 * Each rule throws DropserveError; transports map it to their format.
 */

/** Which request field holds the prompt: "prompt" (completions, gRPC) or "messages" (chat). */
export type PromptParam = 'prompt' | 'messages';

/**
 * The prompt, or prompt + max_tokens, does not fit the context. Carries the numbers so that a
 * transport can word it its own way (the OpenAI layer uses vLLM's sentence); the message is the
 * engine's wording.
 */
export class ContextOverflowError extends DropserveError {
  readonly contextLength: number;
  readonly promptTokens: number;
  /** Absent when the prompt alone leaves no room. */
  readonly maxTokens?: number;
  readonly promptParam: PromptParam;

  constructor(check: {
    contextLength: number;
    promptTokens: number;
    maxTokens?: number;
    promptParam: PromptParam;
  }) {
    const { contextLength, promptTokens, maxTokens, promptParam } = check;
    super(
      'DS_CONTEXT_OVERFLOW',
      maxTokens === undefined
        ? `prompt has ${promptTokens} tokens; this model's context is ${contextLength}, which leaves no room to generate`
        : `prompt has ${promptTokens} tokens and max_tokens is ${maxTokens}: ${promptTokens + maxTokens} tokens exceed this model's context of ${contextLength}`,
      { param: maxTokens === undefined ? promptParam : 'max_tokens' },
    );
    this.contextLength = contextLength;
    this.promptTokens = promptTokens;
    this.maxTokens = maxTokens;
    this.promptParam = promptParam;
  }
}

export function checkPromptNotEmpty(promptTokenIds: readonly number[], param: PromptParam = 'prompt'): void {
  if (promptTokenIds.length === 0) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `${param} is empty (it tokenized to 0 tokens)`, {
      param,
    });
  }
}

/** Every id is a token of the vocabulary (0..vocabSize−1). */
export function checkTokenIds(ids: readonly number[], vocabSize: number, param: string): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `${param}: token id ${id} is out of range; this model's vocabulary is 0..${vocabSize - 1}`,
        { param },
      );
    }
  }
}

export function checkMaxTokens(maxTokens: number): void {
  if (!Number.isInteger(maxTokens) || maxTokens < 1) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `max_tokens must be an integer ≥ 1, got ${maxTokens}`, {
      param: 'max_tokens',
    });
  }
}

/**
 * The completion budget: max_tokens as asked (absent = everything the context leaves), after
 * checking that the prompt leaves room and that prompt + max_tokens fits the context.
 */
export function resolveMaxTokens(check: {
  contextLength: number;
  promptTokens: number;
  maxTokens?: number;
  promptParam?: PromptParam;
}): number {
  const { contextLength, promptTokens, maxTokens } = check;
  const promptParam = check.promptParam ?? 'prompt';
  if (promptTokens >= contextLength)
    throw new ContextOverflowError({ contextLength, promptTokens, promptParam });
  if (maxTokens === undefined) return contextLength - promptTokens;
  checkMaxTokens(maxTokens);
  if (promptTokens + maxTokens > contextLength) {
    throw new ContextOverflowError({ contextLength, promptTokens, maxTokens, promptParam });
  }
  return maxTokens;
}

/** Every rule, for a request as the engine receives it. */
export function validateGenerateRequest(request: GenerateRequest, config: ModelConfig): void {
  checkPromptNotEmpty(request.promptTokenIds);
  checkTokenIds(request.promptTokenIds, config.vocabSize, 'prompt');
  if (request.stopTokenIds) checkTokenIds(request.stopTokenIds, config.vocabSize, 'stop_token_ids');
  resolveMaxTokens({
    contextLength: config.maxSeqLen,
    promptTokens: request.promptTokenIds.length,
    maxTokens: request.maxTokens,
  });
}
