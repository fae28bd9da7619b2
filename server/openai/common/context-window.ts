import { HttpProblem } from '../../http/errors.ts';

export interface ContextWindowCheck {
  contextLength: number;
  promptTokens: number;
  /** max_tokens as requested; absent = whatever fits. */
  maxTokens?: number;
  /** "prompt" (completions) or "messages" (chat), as vLLM words it. */
  promptNoun: 'prompt' | 'messages';
}

const overflow = (message: string, param: string): HttpProblem =>
  new HttpProblem(400, message, { type: 'invalid_request_error', code: 'context_length_exceeded', param });

/**
 * Checks the request against the context before any engine work (the engine checks again) and
 * resolves the completion budget: max_tokens, or everything the context has left.
 */
export function resolveMaxTokens(check: ContextWindowCheck): number {
  const { contextLength, promptTokens, maxTokens, promptNoun } = check;
  const head = `This model's maximum context length is ${contextLength} tokens.`;
  if (promptTokens >= contextLength) {
    throw overflow(
      `${head} However, you requested ${promptTokens} tokens in the ${promptNoun}, which leaves no room for a completion. Please reduce the length of the ${promptNoun}.`,
      promptNoun,
    );
  }
  if (maxTokens === undefined) return contextLength - promptTokens;
  if (promptTokens + maxTokens > contextLength) {
    throw overflow(
      `${head} However, you requested ${promptTokens + maxTokens} tokens (${promptTokens} in the ${promptNoun}, ${maxTokens} in the completion). Please reduce the length of the ${promptNoun} or completion.`,
      'max_tokens',
    );
  }
  return maxTokens;
}
