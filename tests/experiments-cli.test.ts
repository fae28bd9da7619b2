import { describe, expect, it } from 'vitest';
import { parseServeArgs, SERVE_USAGE } from '../cli/serve.ts';

/** `dropserve serve` flags for A/B experiments and shadow scoring. */
describe('serve flags: --experiment, --shadow-rate, --shadow-max-in-flight', () => {
  it('parse into server options (repeatable experiments; variant names may contain colons)', () => {
    const config = parseServeArgs(
      [
        '--experiment',
        'ab=m:1,m:attn-2:3',
        '--experiment',
        'canary=m:attn-2:1',
        '--shadow-rate',
        '0.25',
        '--shadow-max-in-flight',
        '8',
      ],
      {},
    );
    if (config === 'help') throw new Error('unexpected help');
    expect(config.server.experiments).toEqual([
      {
        name: 'ab',
        arms: [
          { variant: 'm', weight: 1 },
          { variant: 'm:attn-2', weight: 3 },
        ],
      },
      { name: 'canary', arms: [{ variant: 'm:attn-2', weight: 1 }] },
    ]);
    expect(config.server.shadowRate).toBe(0.25);
    expect(config.server.shadowMaxInFlight).toBe(8);
  });

  it('default to no experiments and shadow scoring off', () => {
    const config = parseServeArgs([], {});
    if (config === 'help') throw new Error('unexpected help');
    expect(config.server.experiments).toEqual([]);
    expect(config.server.shadowRate).toBe(0);
    expect(config.server.shadowMaxInFlight).toBeUndefined();
  });

  it('refuse bad values, naming the flag', () => {
    expect(() => parseServeArgs(['--shadow-rate', '1.5'], {})).toThrow(
      /--shadow-rate must be a number in 0..1/,
    );
    expect(() => parseServeArgs(['--shadow-rate', 'often'], {})).toThrow(/--shadow-rate/);
    expect(() => parseServeArgs(['--shadow-rate', ''], {})).toThrow(/--shadow-rate/);
    expect(() => parseServeArgs(['--shadow-max-in-flight', '0'], {})).toThrow(/--shadow-max-in-flight/);
    expect(() => parseServeArgs(['--experiment', 'ab'], {})).toThrow(/NAME=VARIANT:WEIGHT/);
    expect(() => parseServeArgs(['--experiment', 'ab=m:x'], {})).toThrow(/not VARIANT:WEIGHT/);
  });

  it('parse --experiment-guardrail (repeatable) and control= in --experiment', () => {
    const config = parseServeArgs(
      [
        '--experiment',
        'ab=m:1,m:attn-2:1,control=m:attn-2',
        '--experiment-guardrail',
        'agreement>=0.85',
        '--experiment-guardrail',
        'ttft_p90_ms<=250',
      ],
      {},
    );
    if (config === 'help') throw new Error('unexpected help');
    expect(config.server.experiments?.[0]?.control).toBe('m:attn-2');
    expect(config.server.experimentGuardrails).toEqual([
      { metric: 'agreement', op: '>=', threshold: 0.85 },
      { metric: 'ttft_p90_ms', op: '<=', threshold: 250 },
    ]);
    expect(() => parseServeArgs(['--experiment-guardrail', 'agreement<=0.8'], {})).toThrow(
      /agreement takes >=/,
    );
    expect(() => parseServeArgs(['--experiment-guardrail', 'latency<=3'], {})).toThrow(
      /--experiment-guardrail "latency<=3"/,
    );
    expect(SERVE_USAGE).toContain('--experiment-guardrail agreement>=X');
  });

  it('are documented in the usage text', () => {
    for (const flag of ['--experiment NAME=VARIANT:WEIGHT', '--shadow-rate R', '--shadow-max-in-flight N']) {
      expect(SERVE_USAGE).toContain(flag);
    }
  });
});
