import { describe, expect, it } from 'vitest';
import type { EngineClient, VariantInfo } from '../../engine/client.ts';
import type { DropserveError } from '../../engine/errors.ts';
import { syntheticConfig } from '../../engine/model/synthetic.ts';
import { errorOf } from '../../engine/testing/expect-dropserve-error.ts';
import { ByteTokenizer } from '../../engine/tokenizer/byte-tokenizer.ts';
import { toTextGenerationRequest } from './generate-request.ts';
import { generateRequestSchema, parseGenerateRequest, shortestFloat32Decimal } from './request-schemas.ts';

const variant = (id: string, dropAttention: number[]): VariantInfo => ({
  id,
  base: 'm',
  spec: { dropAttention, dropMlp: [] },
  kvBytesPerToken: 0,
  kvCacheUsagePerc: 0,
  kvCacheBytesUsed: 0,
  kvCacheBytesAllocated: 0,
  kvCacheBudgetBytes: 0,
  kvBlockTokens: 16,
  kvCachePlacement: 'host',
  kvAdmission: 'on-demand',
  numPreemptions: 0,
  requestsRunning: 0,
  requestsWaiting: 0,
});

/** The parts of an engine the mapping reads: model facts, tokenizer, variant list. */
const engine: Pick<EngineClient, 'model' | 'tokenizer' | 'variants'> = {
  model: {
    name: 'm',
    source: { kind: 'synthetic', id: 'm', description: 'test' },
    config: syntheticConfig({ vocabSize: 300, maxSeqLen: 64 }),
    createdAt: 0,
  },
  tokenizer: new ByteTokenizer(300),
  variants: () => [variant('m', []), variant('m:attn-1', [1])],
};

/** A request as proto-loader decodes it (defaults filled, optional fields absent, oneof named). */
const decoded = (fields: Record<string, unknown>): Record<string, unknown> => ({
  model: '',
  max_tokens: 0,
  stop: [],
  stop_token_ids: [],
  presence_penalty: 0,
  frequency_penalty: 0,
  ignore_eos: false,
  request_id: '',
  ...fields,
});

function invalidArgument(fn: () => unknown): DropserveError {
  const error = errorOf(fn);
  expect(error.code).toBe('DS_INVALID_ARGUMENT');
  return error;
}

describe('shortestFloat32Decimal', () => {
  it('recovers what the client wrote from a float32 widened to double', () => {
    for (const written of [0.7, 0.95, 1.1, 0.05, 0, 1, 2, -1.5, 0.123456]) {
      expect(shortestFloat32Decimal(Math.fround(written))).toBe(written);
    }
    expect(Math.fround(0.7)).not.toBe(0.7); // the problem it solves
  });
});

describe('toTextGenerationRequest', () => {
  it('maps defaults as the HTTP completions endpoint does: BOS added, temperature 1, the rest of the context', () => {
    const r = toTextGenerationRequest(
      parseGenerateRequest(decoded({ input: 'prompt', prompt: 'hi' })),
      engine,
      'id1',
    );
    expect(r).toMatchObject({
      requestId: 'id1',
      variant: 'm',
      promptTokenIds: [1, 'h'.charCodeAt(0) + 3, 'i'.charCodeAt(0) + 3],
      maxTokens: 64 - 3,
      sampling: {
        temperature: 1,
        topP: 1,
        topK: 0,
        minP: 0,
        seed: undefined,
        presencePenalty: 0,
        frequencyPenalty: 0,
        repetitionPenalty: 1,
      },
      logprobs: false,
      topLogprobs: 0,
      transport: 'grpc',
    });
  });

  it('passes every parameter through, float fields as written', () => {
    const raw = decoded({
      model: 'm:attn-1',
      input: 'prompt',
      prompt: 'hi',
      add_bos: false,
      max_tokens: 5,
      temperature: Math.fround(0.7),
      top_p: Math.fround(0.9),
      top_k: 40,
      min_p: Math.fround(0.05),
      seed: 42,
      stop: ['\n'],
      stop_token_ids: [7],
      presence_penalty: Math.fround(0.5),
      frequency_penalty: Math.fround(-0.25),
      repetition_penalty: Math.fround(1.1),
      ignore_eos: true,
      logprobs: 3,
      request_id: 'mine',
    });
    const r = toTextGenerationRequest(parseGenerateRequest(raw), engine);
    expect(r).toMatchObject({
      requestId: 'mine',
      variant: 'm:attn-1',
      promptTokenIds: [107, 108],
      maxTokens: 5,
      sampling: {
        temperature: 0.7,
        topP: 0.9,
        topK: 40,
        minP: 0.05,
        seed: 42,
        presencePenalty: 0.5,
        frequencyPenalty: -0.25,
        repetitionPenalty: 1.1,
      },
      stop: ['\n'],
      stopTokenIds: [7],
      ignoreEos: true,
      logprobs: true,
      topLogprobs: 3,
    });
  });

  it('uses prompt_token_ids as given and asks for the chosen logprob alone with logprobs 0', () => {
    const raw = decoded({ input: 'prompt_token_ids', prompt_token_ids: { ids: [5, 6, 7] }, logprobs: 0 });
    const r = toTextGenerationRequest(parseGenerateRequest(raw), engine, 'x');
    expect(r.promptTokenIds).toEqual([5, 6, 7]);
    expect([r.logprobs, r.topLogprobs]).toEqual([true, 0]);
  });

  it('rejects an unknown model as DS_NOT_FOUND listing the served ones', () => {
    const raw = parseGenerateRequest(decoded({ model: 'm:nope', input: 'prompt', prompt: 'x' }));
    expect(() => toTextGenerationRequest(raw, engine, 'x')).toThrow(
      /"m:nope" is not served; available: m, m:attn-1/,
    );
  });

  it('rejects a request without input', () => {
    const e = invalidArgument(() => toTextGenerationRequest(parseGenerateRequest(decoded({})), engine, 'x'));
    expect(e.message).toMatch(/prompt or prompt_token_ids/);
  });
});

describe('parseGenerateRequest', () => {
  it.each([
    ['temperature', -0.5, /temperature: must be in \[0, 100]/],
    ['temperature', 101, /temperature: must be in \[0, 100]/],
    ['top_p', 0, /top_p: must be in \(0, 1]/],
    ['top_p', 1.5, /top_p: must be in \(0, 1]/],
    ['top_k', -2, /top_k/],
    ['min_p', 2, /min_p: must be in \[0, 1]/],
    ['presence_penalty', 3, /presence_penalty: must be in \[-2, 2]/],
    ['repetition_penalty', 0, /repetition_penalty: must be in \(0, 10]/],
    ['stop', Array(17).fill('x'), /stop: at most 16/],
    ['logprobs', 21, /logprobs: must be ≤ 20/],
    ['temperature', Number.NaN, /temperature/],
  ])('rejects %s = %s naming the field', (field, value, message) => {
    const e = invalidArgument(() =>
      parseGenerateRequest(decoded({ input: 'prompt', prompt: 'x', [field]: value })),
    );
    expect(e.message).toMatch(message);
    expect(e.param).toBe(field);
  });

  it('accepts the decoded shape of a minimal request', () => {
    expect(generateRequestSchema.safeParse(decoded({ input: 'prompt', prompt: '' })).success).toBe(true);
  });
});
