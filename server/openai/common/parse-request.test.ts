import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { HttpProblem } from '../../http/errors.ts';
import { isEmptyList, isValue, never, parseRequest } from './parse-request.ts';

const schema = z.strictObject({ model: z.string(), n: z.int().min(1).nullish() });
const unsupported = { tools: isEmptyList, best_of: isValue(1), suffix: never };

function problemOf(body: unknown): HttpProblem {
  try {
    parseRequest(schema, body, unsupported);
  } catch (e) {
    if (e instanceof HttpProblem) return e;
    throw e;
  }
  throw new Error('expected a problem');
}

describe('parseRequest', () => {
  it('accepts valid bodies, and unsupported parameters at null or their neutral value', () => {
    expect(parseRequest(schema, { model: 'm', tools: [], best_of: 1, suffix: null }, unsupported)).toEqual({
      model: 'm',
    });
  });

  it('names every unsupported parameter that asks for something', () => {
    const p = problemOf({ model: 'm', tools: [{}], suffix: 'x' });
    expect(p.status).toBe(400);
    expect(p.code).toBe('unsupported_parameter');
    expect(p.param).toBe('tools');
    expect(p.message).toContain('tools, suffix');
  });

  it('rejects unknown keys before reporting other problems', () => {
    const p = problemOf({ model: 3, extra: 1 });
    expect(p.code).toBe('unknown_parameter');
    expect(p.param).toBe('extra');
  });

  it('names the field of a type error', () => {
    const p = problemOf({ model: 'm', n: 0 });
    expect(p.param).toBe('n');
    expect(p.message).toMatch(/^Invalid value for 'n'/);
  });

  it('wants a JSON object', () => {
    expect(problemOf([1]).message).toContain('JSON object');
    expect(problemOf(null).status).toBe(400);
  });
});
