import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../engine/model/random.ts';
import { ExperimentRouter, parseExperimentFlag } from './experiment-router.ts';

const variants = new Set(['m', 'm:attn-1', 'm:attn-2']);
/** Seeded, so the statistical checks give the same counts on every run. */
const router = (): ExperimentRouter => {
  const rng = new SeededRandom(11);
  return new ExperimentRouter(
    (v) => variants.has(v),
    () => rng.next(),
  );
};

describe('ExperimentRouter', () => {
  it('splits 50/50 over 400 random requests within statistical tolerance', () => {
    const r = router();
    r.set('ab', [
      { variant: 'm', weight: 1 },
      { variant: 'm:attn-1', weight: 1 },
    ]);
    let pruned = 0;
    for (let i = 0; i < 400; i++) if (r.assign('ab') === 'm:attn-1') pruned++;
    // Binomial(400, 0.5): sd 10, so ±40 is a 4-sigma band.
    expect(Math.abs(pruned - 200)).toBeLessThan(40);
  });

  it('hashes users: 400 distinct users split near 50/50, and each user always lands on the same variant', () => {
    const r = router();
    r.set('ab', [
      { variant: 'm', weight: 1 },
      { variant: 'm:attn-1', weight: 1 },
    ]);
    const first = new Map<string, string>();
    let pruned = 0;
    for (let i = 0; i < 400; i++) {
      const v = r.assign('ab', `user-${i}`);
      first.set(`user-${i}`, v);
      if (v === 'm:attn-1') pruned++;
    }
    expect(Math.abs(pruned - 200)).toBeLessThan(40);
    for (let k = 0; k < 3; k++) for (const [user, v] of first) expect(r.assign('ab', user)).toBe(v);
  });

  it('follows weights, and a weight change takes effect at once', () => {
    const r = router();
    r.set('ab', [
      { variant: 'm', weight: 9 },
      { variant: 'm:attn-2', weight: 1 },
    ]);
    let pruned = 0;
    for (let i = 0; i < 1000; i++) if (r.assign('ab') === 'm:attn-2') pruned++;
    expect(pruned).toBeGreaterThan(60);
    expect(pruned).toBeLessThan(140);
    r.set('ab', [
      { variant: 'm', weight: 0 },
      { variant: 'm:attn-2', weight: 1 },
    ]);
    for (let i = 0; i < 50; i++) expect(r.assign('ab', `u${i}`)).toBe('m:attn-2');
  });

  it('rejects unknown variants, negative weights, zero sums and duplicate arms', () => {
    const r = router();
    expect(() => r.set('x', [{ variant: 'nope', weight: 1 }])).toThrow(/not served/);
    expect(() => r.set('x', [{ variant: 'm', weight: -1 }])).toThrow(/≥ 0/);
    expect(() => r.set('x', [{ variant: 'm', weight: 0 }])).toThrow(/sum to 0/);
    expect(() =>
      r.set('x', [
        { variant: 'm', weight: 1 },
        { variant: 'm', weight: 1 },
      ]),
    ).toThrow(/twice/);
    expect(() => r.set('m', [{ variant: 'm', weight: 1 }])).toThrow(/already a variant/);
  });

  it('parses --experiment flags whose variant names contain colons', () => {
    expect(parseExperimentFlag('ab=m:1,m:attn-2:3')).toEqual({
      name: 'ab',
      arms: [
        { variant: 'm', weight: 1 },
        { variant: 'm:attn-2', weight: 3 },
      ],
    });
    expect(() => parseExperimentFlag('ab')).toThrow(/NAME=VARIANT:WEIGHT/);
    expect(() => parseExperimentFlag('ab=m')).toThrow(/not VARIANT:WEIGHT/);
  });

  it('deletes experiments, and reports every assignment to onAssign', () => {
    const heard: string[] = [];
    const r = new ExperimentRouter(
      (v) => variants.has(v),
      () => 0.99,
      (experiment, variant) => heard.push(`${experiment}→${variant}`),
    );
    r.set('ab', [
      { variant: 'm', weight: 1 },
      { variant: 'm:attn-1', weight: 1 },
    ]);
    expect(r.assign('ab')).toBe('m:attn-1');
    expect(heard).toEqual(['ab→m:attn-1']);
    expect(r.delete('ab')).toBe(true);
    expect(r.delete('ab')).toBe(false);
    expect(r.has('ab')).toBe(false);
    expect(() => r.assign('ab')).toThrow(/no experiment/);
  });

  it('never assigns a zero-weight arm, even at the edges of the unit interval', () => {
    for (const u of [0, 0.5, 0.999999]) {
      const r = new ExperimentRouter(
        (v) => variants.has(v),
        () => u,
      );
      r.set('ab', [
        { variant: 'm', weight: 0 },
        { variant: 'm:attn-1', weight: 2 },
        { variant: 'm:attn-2', weight: 0 },
      ]);
      expect(r.assign('ab')).toBe('m:attn-1');
    }
  });

  it('drains an arm: its users go to the control, every other user keeps their arm', () => {
    const r = new ExperimentRouter(
      (v) => variants.has(v),
      Math.random,
      undefined,
      () => 'm',
    );
    r.set('abc', [
      { variant: 'm', weight: 1 },
      { variant: 'm:attn-1', weight: 1 },
      { variant: 'm:attn-2', weight: 1 },
    ]);
    const before = new Map<string, string>();
    for (let i = 0; i < 300; i++) before.set(`u${i}`, r.assign('abc', `u${i}`));
    expect(r.drain('abc', 'm', 'control')).toBe(false); // the control is never drained
    expect(r.drain('abc', 'm:attn-1', 'agreement too low')).toBe(true);
    for (const [user, variant] of before) {
      expect(r.assign('abc', user)).toBe(variant === 'm:attn-1' ? 'm' : variant);
    }
    // A weight change keeps the drain; deleting the experiment forgets it.
    r.set('abc', [
      { variant: 'm', weight: 2 },
      { variant: 'm:attn-1', weight: 1 },
      { variant: 'm:attn-2', weight: 1 },
    ]);
    expect(r.drained('abc').map((d) => d.variant)).toEqual(['m:attn-1']);
    r.delete('abc');
    expect(r.drained('abc')).toEqual([]);
  });

  it('takes the named control, else the full model, else the first arm; refuses a control that is no arm', () => {
    const r = new ExperimentRouter(
      (v) => variants.has(v),
      Math.random,
      undefined,
      () => 'm',
    );
    expect(
      r.controlOf(
        r.set('a', [
          { variant: 'm:attn-1', weight: 1 },
          { variant: 'm', weight: 1 },
        ]),
      ),
    ).toBe('m');
    expect(
      r.controlOf(
        r.set('b', [
          { variant: 'm:attn-1', weight: 1 },
          { variant: 'm:attn-2', weight: 1 },
        ]),
      ),
    ).toBe('m:attn-1');
    expect(
      r.controlOf(
        r.set(
          'c',
          [
            { variant: 'm', weight: 1 },
            { variant: 'm:attn-2', weight: 1 },
          ],
          { control: 'm:attn-2' },
        ),
      ),
    ).toBe('m:attn-2');
    expect(() => r.set('d', [{ variant: 'm', weight: 1 }], { control: 'm:attn-2' })).toThrow(
      /control "m:attn-2" is not one of its arms/,
    );
  });
});
