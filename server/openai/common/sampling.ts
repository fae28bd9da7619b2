import { z } from 'zod';
import type { SamplingParams } from '../../../engine/client.ts';
import { DEFAULT_SAMPLING } from '../../../engine/client.ts';
import { invalidRequest } from '../../http/errors.ts';

/**
 * Parameters shared by /v1/completions and /v1/chat/completions (OpenAI's and vLLM's sampling
 * extensions). Every field accepts null as "not given", as OpenAI does.
 */
export const MAX_LOGPROBS = 20;
export const MAX_CHOICES_PER_REQUEST = 256;

export const sharedFields = {
  model: z.string().min(1),
  max_tokens: z.int().min(1).nullish(),
  max_completion_tokens: z.int().min(1).nullish(),
  temperature: z.number().min(0).max(100).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.int().min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  seed: z.int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  n: z.int().min(1).max(128).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).max(10).nullish(),
  user: z.string().max(512).nullish(),
  ignore_eos: z.boolean().nullish(),
  stop_token_ids: z.array(z.int().min(0)).max(64).nullish(),
  include_stop_str_in_output: z.boolean().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z
    .strictObject({
      include_usage: z.boolean().nullish(),
      continuous_usage_stats: z.literal(false).nullish(),
    })
    .nullish(),
};

const sharedSchema = z.object(sharedFields);
type SharedFields = z.infer<typeof sharedSchema>;

export function samplingOf(body: SharedFields): SamplingParams {
  return {
    temperature: body.temperature ?? DEFAULT_SAMPLING.temperature,
    topP: body.top_p ?? DEFAULT_SAMPLING.topP,
    topK: body.top_k ?? DEFAULT_SAMPLING.topK,
    minP: body.min_p ?? DEFAULT_SAMPLING.minP,
    seed: body.seed ?? undefined,
    presencePenalty: body.presence_penalty ?? DEFAULT_SAMPLING.presencePenalty,
    frequencyPenalty: body.frequency_penalty ?? DEFAULT_SAMPLING.frequencyPenalty,
    repetitionPenalty: body.repetition_penalty ?? DEFAULT_SAMPLING.repetitionPenalty,
  };
}

/** max_tokens and max_completion_tokens are synonyms here; both given and different is an error. */
export function requestedMaxTokens(body: SharedFields): number | undefined {
  const a = body.max_tokens ?? undefined;
  const b = body.max_completion_tokens ?? undefined;
  if (a !== undefined && b !== undefined && a !== b) {
    throw invalidRequest('max_tokens and max_completion_tokens disagree; send one of them', 'max_tokens');
  }
  return a ?? b;
}

export function stopStringsOf(body: SharedFields): string[] {
  if (body.stop === null || body.stop === undefined) return [];
  return (typeof body.stop === 'string' ? [body.stop] : body.stop).filter((s) => s.length > 0);
}

/** Streaming options only make sense with a stream (OpenAI answers 400 too). */
export function checkStreamOptions(body: SharedFields): void {
  if (body.stream_options && !body.stream) {
    throw invalidRequest('stream_options is only allowed when stream is true', 'stream_options');
  }
}

export function checkChoiceCount(numPrompts: number, n: number): void {
  if (numPrompts * n > MAX_CHOICES_PER_REQUEST) {
    throw invalidRequest(
      `this request asks for ${numPrompts * n} choices (${numPrompts} prompts × n=${n}); the limit is ${MAX_CHOICES_PER_REQUEST}`,
      'n',
    );
  }
}
