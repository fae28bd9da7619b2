import { z } from 'zod';
import { isEmptyObject, isValue, never, type UnsupportedParams } from '../common/parse-request.ts';
import { MAX_LOGPROBS, sharedFields } from '../common/sampling.ts';

const tokenIds = z.array(z.int().min(0)).min(1);

/** POST /v1/completions body: OpenAI's fields plus vLLM's sampling extensions. */
export const completionRequestSchema = z.strictObject({
  ...sharedFields,
  prompt: z.union([z.string(), z.array(z.string()).min(1), tokenIds, z.array(tokenIds).min(1)], {
    error: 'must be a string, a list of strings, a list of token ids, or a list of token-id lists',
  }),
  logprobs: z.int().min(0).max(MAX_LOGPROBS).nullish(),
  echo: z.boolean().nullish(),
});

export type CompletionRequest = z.infer<typeof completionRequestSchema>;

export const UNSUPPORTED_COMPLETION_PARAMS: UnsupportedParams = {
  suffix: isValue(''),
  best_of: isValue(1),
  logit_bias: isEmptyObject,
  use_beam_search: isValue(false),
  guided_json: never,
  guided_regex: never,
  guided_choice: never,
  guided_grammar: never,
  response_format: never,
  prompt_logprobs: never,
  lora_request: never,
};
