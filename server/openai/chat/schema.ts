import { z } from 'zod';
import {
  isEmptyList,
  isEmptyObject,
  isValue,
  never,
  type UnsupportedParams,
} from '../common/parse-request.ts';
import { MAX_LOGPROBS, sharedFields } from '../common/sampling.ts';

const textPart = z.strictObject({ type: z.literal('text'), text: z.string() });

const message = z.strictObject({
  // Tool and function messages belong to tool calling, which dropserve does not implement.
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(textPart)]).nullish(),
  name: z.string().nullish(),
});

/** POST /v1/chat/completions body: OpenAI's fields plus vLLM's sampling extensions. */
export const chatRequestSchema = z.strictObject({
  ...sharedFields,
  messages: z.array(message).min(1),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.int().min(0).max(MAX_LOGPROBS).nullish(),
});

export type ChatRequest = z.infer<typeof chatRequestSchema>;
export type ChatRequestMessage = ChatRequest['messages'][number];

export const UNSUPPORTED_CHAT_PARAMS: UnsupportedParams = {
  tools: isEmptyList,
  tool_choice: isValue('none'),
  functions: isEmptyList,
  function_call: isValue('none'),
  // Meaningless without tools, which are refused above.
  parallel_tool_calls: (v) => typeof v === 'boolean',
  response_format: isValue({ type: 'text' }),
  logit_bias: isEmptyObject,
  audio: never,
  modalities: isValue(['text']),
  prediction: never,
  store: isValue(false),
  metadata: isEmptyObject,
  reasoning_effort: never,
  web_search_options: never,
  service_tier: (v) => v === 'auto' || v === 'default',
  best_of: isValue(1),
  use_beam_search: isValue(false),
  guided_json: never,
  guided_regex: never,
  guided_choice: never,
  guided_grammar: never,
};
