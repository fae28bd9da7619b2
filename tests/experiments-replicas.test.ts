import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runLoadtestCommand } from '../cli/loadtest.ts';
import {
  type ArmStatistics,
  type LatencyMetric,
  mergeArmStatistics,
} from '../server/experiments/arm-statistics.ts';
import { buildReport, type ExperimentReport } from '../server/experiments/experiment-report.ts';
import { parseGuardrail } from '../server/experiments/guardrails.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import {
  e2eServerOptions,
  eventually,
  scrapeMetrics,
  sumOf,
  TEST_MODEL_NAME,
} from './support/test-server.ts';

/**
 * Two replicas serving the same experiment: `loadtest ab-report --url A --url B` adds their
 * sufficient statistics, so its counts are the sum of both replicas' and its intervals and
 * verdicts are exactly those buildReport gives for all the traffic at once (what one server fed
 * everything would report), not an average of two reports.
 */
const PRUNED = `${TEST_MODEL_NAME}:attn-1`;
const REQUESTS_PER_REPLICA = 30;

async function reportOf(url: string): Promise<ExperimentReport> {
  return (await (await fetch(`${url}/v1/experiments/ab/report`)).json()) as ExperimentReport;
}

describe('ab-report merges replicas', () => {
  const servers: RunningServer[] = [];

  beforeAll(async () => {
    for (let i = 0; i < 2; i++) {
      servers.push(
        await startServer(
          e2eServerOptions('synthetic', {
            variants: [{ name: 'attn-1', spec: 'attn:1' }],
            experiments: [
              {
                name: 'ab',
                arms: [
                  { variant: TEST_MODEL_NAME, weight: 1 },
                  { variant: PRUNED, weight: 1 },
                ],
              },
            ],
            experimentGuardrails: [parseGuardrail('kl<=100')],
            shadowRate: 1,
          }),
        ),
      );
    }
  }, 120_000);
  afterAll(() => Promise.all(servers.map((s) => s.close(0))));

  it('counts add up and intervals equal those of all traffic together', async () => {
    const sentToPruned = [0, 0];
    for (const [index, server] of servers.entries()) {
      for (let i = 0; i < REQUESTS_PER_REPLICA; i++) {
        const response = await fetch(`${server.httpUrl}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'ab',
            prompt: `request ${i} on ${index}`,
            max_tokens: 8,
            user: `u${i}`,
          }),
        });
        expect(response.status).toBe(200);
        await response.json();
        if (response.headers.get('x-dropserve-variant') === PRUNED) sentToPruned[index]! += 1;
      }
    }
    // The same users land on the same arm on both replicas (hash of experiment and user).
    expect(sentToPruned[0]).toBe(sentToPruned[1]);
    // Shadow scores land after the responses: wait until each is scored or dropped.
    for (const [index, server] of servers.entries()) {
      await eventually(async () => {
        const m = await scrapeMetrics(server.httpUrl);
        const done =
          sumOf(m, 'dropserve:fidelity_top1_agreement_count', { variant: PRUNED }) +
          sumOf(m, 'dropserve:shadow_dropped_total', { variant: PRUNED });
        return done >= sentToPruned[index]!;
      });
    }

    const [a, b] = await Promise.all(servers.map((s) => reportOf(s.httpUrl)));
    const printed: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
      printed.push(args.join(' '));
    });
    const urls = servers.flatMap((s) => ['--url', s.httpUrl]);
    try {
      expect(await runLoadtestCommand(['ab-report', ...urls, '--experiment', 'ab', '--json'])).toBe(0);
      expect(await runLoadtestCommand(['ab-report', ...urls, '--experiment', 'ab'])).toBe(0);
    } finally {
      log.mockRestore();
    }
    const merged = JSON.parse(printed[0]!) as ExperimentReport & { notes: string[] };
    expect(merged.replicas).toBe(2);
    expect(merged.notes.join('\n')).toMatch(/scope "replica"/);

    // What one server holding every observation reports: buildReport over the summed statistics.
    const all = new Map<string, ArmStatistics>();
    for (const s of [...a!.statistics, ...b!.statistics]) {
      const before = all.get(s.variant);
      all.set(s.variant, before ? mergeArmStatistics(before, s) : s);
    }
    const oneServer = buildReport({
      name: 'ab',
      scope: 'replica',
      arms: a!.arms.map((x) => ({ variant: x.variant, weight: x.weight })),
      control: a!.control,
      fullModel: a!.full_model ?? undefined,
      guardrails: a!.guardrails,
      statistics: all,
      tripped: new Map(),
      drained: new Set(),
      replicas: 2,
    });
    const armOf = (r: ExperimentReport) => r.arms.find((x) => x.variant === PRUNED)!;
    const controlOf = (r: ExperimentReport) => r.arms.find((x) => x.is_control)!;
    expect(armOf(merged).requests).toBe(armOf(a!).requests + armOf(b!).requests);
    expect(controlOf(merged).requests).toBe(controlOf(a!).requests + controlOf(b!).requests);
    expect(armOf(merged).requests + controlOf(merged).requests).toBe(2 * REQUESTS_PER_REPLICA);
    expect(armOf(merged).scored_requests).toBe(armOf(a!).scored_requests + armOf(b!).scored_requests);
    for (const [metric, c] of Object.entries(armOf(merged).latency!)) {
      const want = armOf(oneServer).latency![metric as LatencyMetric];
      expect(c.verdict).toBe(want.verdict);
      expect(c.n_arm).toBe(want.n_arm);
      if (want.ratio === null) continue;
      expect(c.ratio!).toBeCloseTo(want.ratio, 9);
      expect(c.ci95![0]).toBeCloseTo(want.ci95![0], 9);
      expect(c.ci95![1]).toBeCloseTo(want.ci95![1], 9);
      expect(c.cs95![0]).toBeCloseTo(want.cs95![0], 9);
    }
    expect(armOf(merged).fidelity).toEqual(armOf(oneServer).fidelity);
    expect(armOf(merged).guardrail_checks).toEqual(armOf(oneServer).guardrail_checks);
    // The table names both replicas and the merged request count.
    expect(printed[1]).toContain('2 replicas');
    expect(printed[1]).toContain(`requests ${armOf(merged).requests}`);
  }, 120_000);

  it('refuses to merge replicas that disagree on the arms', async () => {
    await fetch(`${servers[1]!.httpUrl}/v1/experiments/ab`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ arms: [{ variant: TEST_MODEL_NAME, weight: 1 }] }),
    });
    const errors: string[] = [];
    const error = vi.spyOn(console, 'error').mockImplementation((...args: unknown[]) => {
      errors.push(args.join(' '));
    });
    try {
      const urls = servers.flatMap((s) => ['--url', s.httpUrl]);
      expect(await runLoadtestCommand(['ab-report', ...urls, '--experiment', 'ab'])).toBe(1);
    } finally {
      error.mockRestore();
    }
    expect(errors.join('\n')).toMatch(/replicas disagree on experiment "ab"/);
  });
});
