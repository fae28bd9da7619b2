import { describe, expect, it } from 'vitest';
import { checkExperimentName, parseExperimentBody, parseExperimentDefinition } from './experiment-body.ts';

describe('POST /v1/experiments body', () => {
  it('takes arms in order, or a weight per variant', () => {
    expect(
      parseExperimentBody({
        arms: [
          { variant: 'm', weight: 1 },
          { variant: 'm:a', weight: 0.5 },
        ],
      }),
    ).toEqual([
      { variant: 'm', weight: 1 },
      { variant: 'm:a', weight: 0.5 },
    ]);
    expect(parseExperimentBody({ weights: { m: 3, 'm:a': 1 } })).toEqual([
      { variant: 'm', weight: 3 },
      { variant: 'm:a', weight: 1 },
    ]);
  });

  it('names the field of the first problem', () => {
    const problem = (body: unknown): string => {
      try {
        parseExperimentBody(body);
        return 'accepted';
      } catch (e) {
        return (e as Error).message;
      }
    };
    expect(problem({ arms: [{ variant: 'm', weight: -1 }] })).toMatch(/^arms\.0\.weight: must be ≥ 0/);
    expect(problem({ arms: [{ variant: '', weight: 1 }] })).toMatch(/^arms\.0\.variant: must not be empty/);
    expect(problem({ weights: {} })).toMatch(/^weights: needs at least one variant/);
    expect(problem({ weights: { m: 'x' } })).toMatch(/^weights\.m: must be a number/);
    expect(problem([])).toMatch(/^body: /);
    expect(problem({ arms: [], weights: {} })).toMatch(/either "arms" or "weights"/);
  });

  it('accepts model-id-like names and refuses others', () => {
    expect(checkExperimentName('stories260K:ab/test-1')).toBe('stories260K:ab/test-1');
    for (const bad of ['', ' ab', 'a b', '-ab', 'x'.repeat(129)])
      expect(() => checkExperimentName(bad)).toThrow();
  });

  it('reads an optional "control" beside either form', () => {
    expect(parseExperimentDefinition({ weights: { m: 1, 'm:a': 1 }, control: 'm:a' })).toEqual({
      arms: [
        { variant: 'm', weight: 1 },
        { variant: 'm:a', weight: 1 },
      ],
      control: 'm:a',
    });
    expect(parseExperimentDefinition({ arms: [{ variant: 'm', weight: 1 }] })).toEqual({
      arms: [{ variant: 'm', weight: 1 }],
    });
    expect(() => parseExperimentDefinition({ weights: { m: 1 }, control: '' })).toThrow(
      /^control: must not be empty/,
    );
  });
});
