import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateRequest } from '../client.ts';
import { syntheticConfig } from '../model/synthetic.ts';
import { errorOf } from '../testing/expect-dropserve-error.ts';
import {
  ContextOverflowError,
  checkTokenIds,
  resolveMaxTokens,
  validateGenerateRequest,
} from './validate-generate.ts';

const config = syntheticConfig({ vocabSize: 300, maxSeqLen: 64 });

const request = (fields: Partial<GenerateRequest>): GenerateRequest => ({
  requestId: 'r',
  variant: 'm',
  promptTokenIds: [1, 2, 3],
  maxTokens: 4,
  sampling: DEFAULT_SAMPLING,
  ...fields,
});

describe('validateGenerateRequest', () => {
  it('accepts a request that fits, up to the last position of the context', () => {
    expect(() => validateGenerateRequest(request({}), config)).not.toThrow();
    expect(() =>
      validateGenerateRequest(request({ promptTokenIds: Array(60).fill(5), maxTokens: 4 }), config),
    ).not.toThrow();
  });

  it.each([
    ['an empty prompt', { promptTokenIds: [] }, 'DS_INVALID_ARGUMENT', 'prompt', /prompt is empty/],
    [
      'a prompt id past the vocabulary',
      { promptTokenIds: [1, 300] },
      'DS_INVALID_ARGUMENT',
      'prompt',
      /300 .*0\.\.299/,
    ],
    ['a negative prompt id', { promptTokenIds: [-1] }, 'DS_INVALID_ARGUMENT', 'prompt', /-1/],
    ['a fractional prompt id', { promptTokenIds: [1.5] }, 'DS_INVALID_ARGUMENT', 'prompt', /1\.5/],
    [
      'a stop id past the vocabulary',
      { stopTokenIds: [999] },
      'DS_INVALID_ARGUMENT',
      'stop_token_ids',
      /999/,
    ],
    [
      'max_tokens 0',
      { maxTokens: 0 },
      'DS_INVALID_ARGUMENT',
      'max_tokens',
      /max_tokens must be an integer ≥ 1, got 0/,
    ],
    [
      'a prompt that fills the context',
      { promptTokenIds: Array(64).fill(5) },
      'DS_CONTEXT_OVERFLOW',
      'prompt',
      /prompt has 64 tokens; this model's context is 64, which leaves no room to generate/,
    ],
    [
      'prompt + max_tokens past the context',
      { promptTokenIds: Array(10).fill(5), maxTokens: 55 },
      'DS_CONTEXT_OVERFLOW',
      'max_tokens',
      /prompt has 10 tokens and max_tokens is 55: 65 tokens exceed this model's context of 64/,
    ],
  ])('rejects %s naming the field', (_, fields, code, param, message) => {
    const error = errorOf(() => validateGenerateRequest(request(fields), config));
    expect(error.code).toBe(code);
    expect(error.param).toBe(param);
    expect(error.message).toMatch(message);
  });
});

describe('resolveMaxTokens', () => {
  it('is what the context leaves when max_tokens is absent, max_tokens otherwise', () => {
    expect(resolveMaxTokens({ contextLength: 64, promptTokens: 10 })).toBe(54);
    expect(resolveMaxTokens({ contextLength: 64, promptTokens: 10, maxTokens: 54 })).toBe(54);
  });

  it('carries the numbers and the prompt field for transports that word it their own way', () => {
    const error = errorOf(() =>
      resolveMaxTokens({ contextLength: 64, promptTokens: 60, maxTokens: 8, promptParam: 'messages' }),
    );
    expect(error).toBeInstanceOf(ContextOverflowError);
    expect(error).toMatchObject({
      contextLength: 64,
      promptTokens: 60,
      maxTokens: 8,
      promptParam: 'messages',
    });
    expect(error.param).toBe('max_tokens');
    const full = errorOf(() =>
      resolveMaxTokens({ contextLength: 64, promptTokens: 70, promptParam: 'messages' }),
    );
    expect(full).toMatchObject({ promptTokens: 70, maxTokens: undefined, param: 'messages' });
  });
});

describe('checkTokenIds', () => {
  it('accepts 0..vocab−1 and names the field it rejects', () => {
    expect(() => checkTokenIds([0, 299], 300, 'prompt')).not.toThrow();
    expect(errorOf(() => checkTokenIds([0, 300], 300, 'stop_token_ids')).param).toBe('stop_token_ids');
  });
});
