import {
  ContextOverflowError,
  type PromptParam,
  resolveMaxTokens as resolveBudget,
} from '../../../engine/request/validate-generate.ts';
import { HttpProblem } from '../../http/errors.ts';

export interface ContextWindowCheck {
  contextLength: number;
  promptTokens: number;
  /** max_tokens as requested; absent = whatever fits. */
  maxTokens?: number;
  /** "prompt" (completions) or "messages" (chat), as vLLM words it. */
  promptNoun: PromptParam;
}

/**
 * The engine's context rule (engine/request/validate-generate.ts), checked before any engine work
 * and worded as vLLM's OpenAI server words it; resolves the completion budget: max_tokens, or
 * everything the context has left.
 */
export function resolveMaxTokens(check: ContextWindowCheck): number {
  try {
    return resolveBudget({
      contextLength: check.contextLength,
      promptTokens: check.promptTokens,
      maxTokens: check.maxTokens,
      promptParam: check.promptNoun,
    });
  } catch (error) {
    if (error instanceof ContextOverflowError) throw contextLengthExceeded(error);
    throw error;
  }
}

/** A context overflow in vLLM's words, with the numbers. */
export function contextLengthExceeded(error: ContextOverflowError): HttpProblem {
  const { contextLength, promptTokens, maxTokens, promptParam: noun } = error;
  const head = `This model's maximum context length is ${contextLength} tokens.`;
  const message =
    maxTokens === undefined
      ? `${head} However, you requested ${promptTokens} tokens in the ${noun}, which leaves no room for a completion. Please reduce the length of the ${noun}.`
      : `${head} However, you requested ${promptTokens + maxTokens} tokens (${promptTokens} in the ${noun}, ${maxTokens} in the completion). Please reduce the length of the ${noun} or completion.`;
  return new HttpProblem(400, message, {
    type: 'invalid_request_error',
    code: 'context_length_exceeded',
    param: error.param,
    cause: error,
  });
}
