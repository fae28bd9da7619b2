import { describe, expect, it } from 'vitest';
import { type ArmStatistics, mergeArmStatistics } from './arm-statistics.ts';
import { buildReport } from './experiment-report.ts';
import { ExperimentRouter, parseExperimentFlag } from './experiment-router.ts';
import { ExperimentStatistics } from './experiment-statistics.ts';
import { parseGuardrail } from './guardrails.ts';

const FULL = 'm';
const PRUNED = 'm:attn-3';

function setup(guardrails: string[] = []) {
  let k = 0;
  // Deterministic "random" assignment: alternate arms.
  const router = new ExperimentRouter(
    (v) => v === FULL || v === PRUNED,
    () => (k++ % 2 === 0 ? 0.25 : 0.75),
    undefined,
    () => FULL,
  );
  router.set('ab', [
    { variant: FULL, weight: 1 },
    { variant: PRUNED, weight: 1 },
  ]);
  const trips: string[] = [];
  const statistics = new ExperimentStatistics({
    router,
    guardrails: guardrails.map(parseGuardrail),
    onTrip: (experiment, trip) => trips.push(`${experiment}/${trip.variant}/${trip.metric}`),
    random: () => 0.5,
  });
  return { router, statistics, trips };
}

describe('parseGuardrail / parseExperimentFlag', () => {
  it('parses each guardrail and refuses the wrong direction or an unknown metric', () => {
    expect(parseGuardrail('agreement>=0.85')).toEqual({ metric: 'agreement', op: '>=', threshold: 0.85 });
    expect(parseGuardrail('kl<=0.5')).toEqual({ metric: 'kl', op: '<=', threshold: 0.5 });
    expect(parseGuardrail('ttft_p90_ms<=250')).toEqual({ metric: 'ttft_p90_ms', op: '<=', threshold: 250 });
    expect(() => parseGuardrail('agreement<=0.85')).toThrow(/agreement takes >=/);
    expect(() => parseGuardrail('speed>=1')).toThrow(/expected agreement>=X/);
    expect(() => parseGuardrail('agreement>=1.5')).toThrow(/\[0, 1\]/);
  });

  it('reads control= in --experiment', () => {
    expect(parseExperimentFlag('ab=m:1,m:attn-3:1,control=m:attn-3')).toEqual({
      name: 'ab',
      arms: [
        { variant: 'm', weight: 1 },
        { variant: 'm:attn-3', weight: 1 },
      ],
      control: 'm:attn-3',
    });
  });
});

describe('ExperimentStatistics', () => {
  it('trips an agreement guardrail once the sequence is below the bar, drains the arm to the control', () => {
    const { router, statistics, trips } = setup(['agreement>=0.85']);
    let scored = 0;
    // Per-request agreement around 0.4: far below 0.85.
    while (trips.length === 0 && scored < 200) {
      statistics.observeFidelity(PRUNED, { agreement: 0.3 + (scored % 3) * 0.1, klMean: 1, deltaNllMean: 1 });
      scored++;
    }
    expect(trips).toEqual([`ab/${PRUNED}/agreement`]);
    expect(scored).toBe(20); // the burn-in: no verdict before 20 scored requests
    expect(router.drained('ab').map((d) => d.variant)).toEqual([PRUNED]);
    // Every new request goes to the control now, whatever the split says.
    for (let i = 0; i < 10; i++) expect(router.assign('ab')).toBe(FULL);
    const report = statistics.report('ab')!;
    const arm = report.arms.find((a) => a.variant === PRUNED)!;
    expect(arm.drained).toBe(true);
    expect(arm.guardrail).toMatchObject({ tripped: true, metric: 'agreement', threshold: 0.85, at_n: 20 });
    expect(arm.fidelity!.agreement.verdict).toBe('worse');
    expect(arm.fidelity!.agreement.n_arm).toBe(20);
  });

  it('does not trip while the arm clears the bar', () => {
    const { router, statistics, trips } = setup(['agreement>=0.5', 'kl<=2']);
    for (let i = 0; i < 300; i++) {
      statistics.observeFidelity(PRUNED, { agreement: 0.9 + (i % 2) * 0.05, klMean: 0.1, deltaNllMean: 0.1 });
    }
    expect(trips).toEqual([]);
    expect(router.drained('ab')).toEqual([]);
  });

  it('trips ttft_p90_ms when most requests are over the threshold', () => {
    const { statistics, trips } = setup(['ttft_p90_ms<=100']);
    for (let i = 0; i < 100 && trips.length === 0; i++) {
      statistics.observeRequest(FULL, { ttftMs: 50, e2eMs: 200, tpotMs: 5, outputTokens: 20 });
      statistics.observeRequest(PRUNED, { ttftMs: 150, e2eMs: 300, tpotMs: 5, outputTokens: 20 });
    }
    expect(trips).toEqual([`ab/${PRUNED}/ttft_p90_ms`]);
  });

  it('a report built from merged replica statistics equals the report of all traffic on one server', () => {
    const one = setup();
    const a = setup();
    const b = setup();
    for (let i = 0; i < 120; i++) {
      const control = { ttftMs: 40 + (i % 7), e2eMs: 300 + (i % 11), tpotMs: 4 + (i % 3), outputTokens: 30 };
      const arm = { ttftMs: 30 + (i % 5), e2eMs: 250 + (i % 13), tpotMs: 3 + (i % 2), outputTokens: 30 };
      const replica = i % 3 === 0 ? a : b;
      for (const target of [one, replica]) {
        target.statistics.observeRequest(FULL, control);
        target.statistics.observeRequest(PRUNED, arm);
        target.statistics.observeFidelity(PRUNED, {
          agreement: 0.5 + (i % 4) * 0.1,
          klMean: 0.3,
          deltaNllMean: 0.2,
        });
      }
    }
    const reportA = a.statistics.report('ab')!;
    const reportB = b.statistics.report('ab')!;
    const merged = new Map<string, ArmStatistics>();
    for (const s of [...reportA.statistics, ...reportB.statistics]) {
      const before = merged.get(s.variant);
      merged.set(s.variant, before ? mergeArmStatistics(before, s) : s);
    }
    const combined = buildReport({
      name: 'ab',
      scope: 'file',
      arms: reportA.arms.map((x) => ({ variant: x.variant, weight: x.weight })),
      control: reportA.control,
      fullModel: FULL,
      guardrails: [],
      statistics: merged,
      tripped: new Map(),
      drained: new Set(),
      replicas: 2,
    });
    const single = one.statistics.report('ab')!;
    const armOf = (r: typeof single) => r.arms.find((x) => x.variant === PRUNED)!;
    expect(armOf(combined).requests).toBe(armOf(single).requests);
    for (const metric of ['ttft_ms', 'tpot_ms', 'e2e_ms', 'output_tokens_per_s'] as const) {
      const got = armOf(combined).latency![metric];
      const want = armOf(single).latency![metric];
      expect(got.verdict).toBe(want.verdict);
      expect(got.n_arm).toBe(want.n_arm);
      expect(got.ratio!).toBeCloseTo(want.ratio!, 9);
      expect(got.ci95![0]).toBeCloseTo(want.ci95![0], 9);
      expect(got.cs95![1]).toBeCloseTo(want.cs95![1], 9);
    }
    expect(armOf(combined).fidelity!.agreement.arm_ci95![0]).toBeCloseTo(
      armOf(single).fidelity!.agreement.arm_ci95![0],
      9,
    );
    expect(armOf(single).latency!.ttft_ms.verdict).toBe('better');
  });
});
