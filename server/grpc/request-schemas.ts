import { z } from 'zod';
import { DropserveError } from '../../engine/errors.ts';

/**
 * Validation at the gRPC edge. proto-loader hands handlers loose objects; these schemas turn them
 * into typed values (snake_case, as on the wire) and reject out-of-range parameters as
 * DS_INVALID_ARGUMENT naming the field. Semantic checks that need the model (vocabulary, context,
 * variant names) happen in generate-request.ts.
 */

/** Limits shared with the HTTP API (server/openai/common/sampling.ts), so both accept the same requests. */
export const MAX_TOP_LOGPROBS = 20;
export const MAX_STOP_STRINGS = 16;
export const MAX_STOP_TOKEN_IDS = 64;

/**
 * Proto `float` fields arrive widened to double (0.7 → 0.699999988079071). Recover the shortest
 * decimal that encodes to the same float32, i.e. what the client wrote, so a gRPC request samples
 * with exactly the parameters the same HTTP request would.
 */
export function shortestFloat32Decimal(value: number): number {
  if (!Number.isFinite(value)) return value;
  for (let digits = 1; digits <= 9; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === value) return candidate;
  }
  return value;
}

const float = () => z.number('must be a finite number').transform(shortestFloat32Decimal);
const tokenId = z.number().int().nonnegative();
const penalty = float().pipe(z.number().min(-2, 'must be in [-2, 2]').max(2, 'must be in [-2, 2]'));

export const generateRequestSchema = z.object({
  model: z.string(),
  /** Which member of the `input` oneof is set (proto-loader's `oneofs: true`). */
  input: z.enum(['prompt', 'prompt_token_ids']).optional(),
  prompt: z.string().optional(),
  prompt_token_ids: z.object({ ids: z.array(tokenId) }).nullish(),
  max_tokens: z.number().int().nonnegative(),
  temperature: float()
    .pipe(z.number().min(0, 'must be in [0, 100]').max(100, 'must be in [0, 100]'))
    .optional(),
  top_p: float().pipe(z.number().gt(0, 'must be in (0, 1]').max(1, 'must be in (0, 1]')).optional(),
  top_k: z.number().int().min(-1, 'must be -1, 0 (off) or a positive count').optional(),
  min_p: float().pipe(z.number().min(0, 'must be in [0, 1]').max(1, 'must be in [0, 1]')).optional(),
  seed: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER, 'must fit in 53 bits').optional(),
  stop: z.array(z.string()).max(MAX_STOP_STRINGS, `at most ${MAX_STOP_STRINGS} stop strings`),
  stop_token_ids: z.array(tokenId).max(MAX_STOP_TOKEN_IDS, `at most ${MAX_STOP_TOKEN_IDS} stop token ids`),
  presence_penalty: penalty,
  frequency_penalty: penalty,
  repetition_penalty: float()
    .pipe(z.number().gt(0, 'must be in (0, 10]').max(10, 'must be in (0, 10]'))
    .optional(),
  ignore_eos: z.boolean(),
  logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS, `must be ≤ ${MAX_TOP_LOGPROBS}`).optional(),
  add_bos: z.boolean().optional(),
  request_id: z.string(),
});

/** A GenerateRequest message after edge validation (snake_case, as in proto/dropserve.proto). */
export type GenerateRpcRequest = z.output<typeof generateRequestSchema>;

export const tokenizeRequestSchema = z.object({
  model: z.string(),
  text: z.string(),
  add_bos: z.boolean().optional(),
});
export type TokenizeRpcRequest = z.output<typeof tokenizeRequestSchema>;

export const detokenizeRequestSchema = z.object({
  model: z.string(),
  token_ids: z.array(tokenId),
});
export type DetokenizeRpcRequest = z.output<typeof detokenizeRequestSchema>;

/** Parses a decoded message; the first problem becomes DS_INVALID_ARGUMENT naming its field. */
export function parseMessage<S extends z.ZodType>(schema: S, raw: unknown): z.output<S> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const param = issue.path.join('.');
  throw new DropserveError('DS_INVALID_ARGUMENT', param ? `${param}: ${issue.message}` : issue.message, {
    param: param || undefined,
  });
}

export const parseGenerateRequest = (raw: unknown): GenerateRpcRequest =>
  parseMessage(generateRequestSchema, raw);
