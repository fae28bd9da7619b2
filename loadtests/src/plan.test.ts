import { describe, expect, it } from 'vitest';
import {
  type PlanInput,
  parseAgreementOverride,
  parseCapacityReport,
  parseMixSpec,
  parseReplicaCost,
  planCapacity,
} from './plan.ts';
import { formatCapacityPlan } from './plan-format.ts';

/** A capacity report as `loadtest capacity --json` writes it, reduced to what plan reads. */
function report(): PlanInput {
  const level = (concurrency: number, rps: number, holdsSlo = true) => ({
    concurrency,
    holdsSlo,
    summary: { completed: 40, totalOutputTokens: 40 * 100, requestThroughput: rps },
  });
  return parseCapacityReport({
    config: { slo: { ttftMs: 500 }, sloPercentile: 99, dataset: 'random (100 out)' },
    commit: 'abc1234',
    startedAt: '2026-11-30T00:00:00.000Z',
    variants: [
      {
        model: 'm',
        maxConcurrency: 4,
        levels: [level(2, 3), level(4, 5), level(8, 6, false)],
        variant: { base: 'm' },
      },
      {
        model: 'm:attn-2',
        maxConcurrency: 8,
        levels: [level(4, 6), level(8, 8)],
        agreement: 0.95,
        variant: { base: 'm' },
      },
      {
        model: 'm:attn-4',
        maxConcurrency: 16,
        levels: [level(16, 20)],
        agreement: 0.6,
        variant: { base: 'm' },
      },
      {
        model: 'm:mlp-3',
        maxConcurrency: 0,
        levels: [level(1, 1, false)],
        agreement: 0.99,
        variant: { base: 'm' },
      },
    ],
  });
}

describe('planCapacity', () => {
  it('replicas = ceil(target / (req/s at the highest held level × headroom)), cost per hour and per 1M output tokens', () => {
    const plan = planCapacity(report(), { targetRps: 30, headroom: 0.7, replicaCostPerHour: 1.2 });
    const [full, attn2, attn4, mlp3] = plan.variants;
    expect(full).toMatchObject({
      measuredRps: 5,
      capacityRps: 5,
      replicas: 9,
      agreement: 1,
      agreementSource: 'full model',
    });
    expect(full!.costPerHour).toBeCloseTo(10.8, 12);
    // 10.8 $/h ÷ (30 req/s × 100 tokens × 3600 s) × 1e6
    expect(full!.costPerMillionOutputTokens).toBeCloseTo(1, 12);
    expect(attn2).toMatchObject({ measuredRps: 8, replicas: 6, agreement: 0.95, agreementSource: 'report' }); // 30/5.6 = 5.36
    expect(attn4).toMatchObject({ measuredRps: 20, replicas: 3 }); // 30/14 = 2.14
    expect(mlp3).toMatchObject({ replicas: null, costPerHour: null, meetsSlo: false, eligible: false });
    expect(plan.meanOutputTokens).toBe(100);
    expect(plan.approximation).toBeNull();
    // No agreement bar: the cheapest that meets the SLO.
    expect(plan.chosen).toBe('m:attn-4');
  });

  it('--min-agreement excludes variants below the bar, and unknown agreement when a bar is set', () => {
    const plan = planCapacity(report(), { targetRps: 30, replicaCostPerHour: 1.2, minAgreement: 0.9 });
    expect(plan.variants.map((v) => v.eligible)).toEqual([true, true, false, false]);
    expect(plan.variants[2]!.excludedBecause).toBe('agreement 0.600 < 0.9');
    expect(plan.chosen).toBe('m:attn-2');
    expect(plan.verdict).toContain('m:attn-2: 6 replica(s) serve 30 req/s at p99 TTFT');

    const input = report();
    delete input.variants[1]!.agreement;
    const unknown = planCapacity(input, { targetRps: 30, minAgreement: 0.9 });
    expect(unknown.variants[1]!.excludedBecause).toMatch(/agreement unknown/);
    expect(unknown.chosen).toBe('m');
  });

  it('--agreement overrides the report; nothing eligible gives no choice and says why', () => {
    const plan = planCapacity(report(), {
      targetRps: 30,
      minAgreement: 0.5,
      agreementOverrides: { 'm:attn-4': 0.4, 'm:attn-2': 0.4, m: 0.4 },
    });
    expect(plan.variants[2]).toMatchObject({ agreement: 0.4, agreementSource: 'override', eligible: false });
    expect(plan.chosen).toBeNull();
    expect(plan.verdict).toMatch(/^no variant meets p99 TTFT/);
    expect(() => planCapacity(report(), { targetRps: 1, agreementOverrides: { nope: 1 } })).toThrow(
      /not in the report/,
    );
  });

  it('a different output length rescales capacity by the token ratio and says it is an approximation', () => {
    const plan = planCapacity(report(), {
      targetRps: 10,
      headroom: 1,
      mix: parseMixSpec('output=200,input=50')!,
    });
    expect(plan.variants[0]).toMatchObject({ mixScale: 0.5, capacityRps: 2.5, replicas: 4 });
    expect(plan.meanOutputTokens).toBe(200);
    expect(plan.approximation).toMatch(/decode dominates/);
    expect(plan.chosen).toBe('m:attn-4'); // 10 req/s: ceil(10 / 10) = 1
  });

  it('without a replica cost ranks by replicas; the table marks the choice', () => {
    const plan = planCapacity(report(), { targetRps: 30, minAgreement: 0.9 });
    expect(plan.variants.every((v) => v.costPerHour === null)).toBe(true);
    const table = formatCapacityPlan(plan);
    expect(table).toMatch(/^\* m:attn-2 +8 +8\.00 +8\.00 +6 /m);
    expect(table).toContain('ranked by replica count');
  });

  it('rejects bad options and reports that lack a field', () => {
    expect(() => planCapacity(report(), { targetRps: 0 })).toThrow(/target/);
    expect(() => planCapacity(report(), { targetRps: 1, headroom: 1.5 })).toThrow(/headroom/);
    expect(() => parseCapacityReport({ config: {}, variants: [] }, 'old.json')).toThrow(
      /^old\.json: config\.slo/,
    );
    expect(() =>
      parseCapacityReport({
        ...report(),
        variants: [
          { model: 'm', maxConcurrency: 1, levels: [{ concurrency: 1, holdsSlo: true, summary: {} }] },
        ],
      }),
    ).toThrow(/variants\.0\.levels\.0\.summary\.completed/);
  });
});

describe('flag parsers', () => {
  it('--replica-cost, --agreement and --mix', () => {
    expect(parseReplicaCost('1.2/h')).toBe(1.2);
    expect(parseReplicaCost('$3')).toBe(3);
    expect(parseReplicaCost('0.5/min')).toBe(30);
    expect(parseReplicaCost('730/month')).toBe(1);
    expect(() => parseReplicaCost('cheap')).toThrow(/--replica-cost/);
    expect(parseAgreementOverride('stories260K:attn-2=0.93')).toEqual(['stories260K:attn-2', 0.93]);
    expect(() => parseAgreementOverride('m=1.5')).toThrow(/\[0, 1\]/);
    expect(parseMixSpec('output=64')).toEqual({
      meanOutputTokens: 64,
      meanInputTokens: null,
      source: 'output=64',
    });
    expect(parseMixSpec('prompts.jsonl')).toBeNull();
    expect(() => parseMixSpec('output=0')).toThrow(/--mix/);
    expect(() => parseMixSpec('input=5')).toThrow(/output=N is required/);
  });
});
