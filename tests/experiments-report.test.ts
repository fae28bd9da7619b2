import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runLoadtestCommand } from '../cli/loadtest.ts';
import type { ExperimentReport } from '../server/experiments/experiment-report.ts';
import type { RunningServer } from '../server/start-server.ts';
import {
  AB_FULL,
  AB_PRUNED,
  completeAs,
  driveUntilTripped,
  experimentReport,
  startPrunedAbServer,
} from './support/experiment-traffic.ts';
import { scrapeMetrics, sumOf } from './support/test-server.ts';

/**
 * An A/B experiment between stories260K and a variant that drops 3 of its 5 attention layers
 * (agreement ≈ 0.36 in docs/variants.md), with every pruned request shadow-scored and the guardrail
 * agreement>=0.85. Requests are driven one at a time and after each the test waits until its shadow
 * score is accounted for (scored or dropped), so the run is a sequence of states, not a race: it
 * stops as soon as the report says the guardrail tripped, within a generous bound.
 */
const MAX_REQUESTS = 400;

describe('experiment report, verdicts and guardrail end to end (stories260K)', () => {
  let server: RunningServer;

  beforeAll(async () => {
    server = await startPrunedAbServer();
  }, 120_000);
  afterAll(() => server?.close(0));

  it('reaches "worse" on agreement, trips the guardrail and drains the arm to the control', async () => {
    expect(await experimentReport(server, 'ab')).toMatchObject({
      object: 'experiment.report',
      name: 'ab',
      control: AB_FULL,
      scope: 'replica',
    });
    const { report, armUsers } = await driveUntilTripped(server, 'ab', AB_PRUNED, MAX_REQUESTS);
    const arm = report.arms.find((a) => a.variant === AB_PRUNED)!;
    expect(arm.guardrail).toMatchObject({ tripped: true, metric: 'agreement', op: '>=', threshold: 0.85 });
    expect(arm.guardrail!.at_n).toBeGreaterThanOrEqual(20);
    expect(arm.drained).toBe(true);
    expect(arm.fidelity!.agreement.verdict).toBe('worse');
    expect(arm.fidelity!.agreement.arm_cs95![1]).toBeLessThan(0.85);
    expect(arm.fidelity!.agreement.arm_mean!).toBeLessThan(0.85);
    expect(arm.scored_requests).toBe(arm.guardrail!.at_n);
    // Latency comparisons exist for every metric, each with a 95% interval around its ratio.
    for (const c of Object.values(arm.latency!)) {
      expect(c.n_arm).toBeGreaterThan(0);
      if (c.ratio !== null) expect(c.ci95![0]).toBeLessThanOrEqual(c.ratio);
    }

    const metrics = await scrapeMetrics(server.httpUrl);
    expect(
      sumOf(metrics, 'dropserve:experiment_guardrail_tripped', { experiment: 'ab', arm: AB_PRUNED }),
    ).toBe(1);

    // Users that were on the pruned arm now land on the control; nothing new reaches the arm.
    const requestsBefore = arm.requests;
    for (const user of armUsers.slice(0, 5)) expect(await completeAs(server, 'ab', user, 0)).toBe(AB_FULL);
    const after = (await experimentReport(server, 'ab')).arms.find((a) => a.variant === AB_PRUNED)!;
    expect(after.requests).toBe(requestsBefore);
    const view = (await (await fetch(`${server.httpUrl}/v1/experiments/ab`)).json()) as {
      arms: { variant: string; drained?: boolean }[];
    };
    expect(view.arms.find((a) => a.variant === AB_PRUNED)!.drained).toBe(true);
  }, 300_000);

  it('`loadtest ab-report` prints the same counts and verdict as the endpoint', async () => {
    const report = await experimentReport(server, 'ab');
    const printed: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
      printed.push(args.join(' '));
    });
    try {
      expect(await runLoadtestCommand(['ab-report', '--url', server.httpUrl, '--experiment', 'ab'])).toBe(0);
      expect(
        await runLoadtestCommand(['ab-report', '--url', server.httpUrl, '--experiment', 'ab', '--json']),
      ).toBe(0);
    } finally {
      log.mockRestore();
    }
    const [text, json] = printed;
    const arm = report.arms.find((a) => a.variant === AB_PRUNED)!;
    expect(text).toContain(`arm ${AB_PRUNED}`);
    expect(text).toContain('DRAINED');
    expect(text).toMatch(new RegExp(`agreement .* worse .*full/${arm.scored_requests}`));
    expect(text).toContain(`guardrail tripped: agreement>=0.85 at n=${arm.guardrail!.at_n}`);
    const merged = JSON.parse(json!) as ExperimentReport;
    expect(merged.statistics).toEqual(report.statistics);
    expect(merged.arms.find((a) => a.variant === AB_PRUNED)!.fidelity).toEqual(arm.fidelity);
  });

  it('takes the control from the admin body, and refuses one that is not an arm with a 400', async () => {
    const post = (body: unknown) =>
      fetch(`${server.httpUrl}/v1/experiments/reverse`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const created = await post({ weights: { [AB_FULL]: 1, [AB_PRUNED]: 1 }, control: AB_PRUNED });
    expect(created.status).toBe(201);
    expect(await created.json()).toMatchObject({ control: AB_PRUNED, scope: 'replica' });
    const report = await experimentReport(server, 'reverse');
    expect(report.control).toBe(AB_PRUNED);
    expect(report.arms.find((a) => a.variant === AB_FULL)).toMatchObject({
      is_control: false,
      drained: false,
    });
    const refused = await post({ weights: { [AB_FULL]: 1 }, control: AB_PRUNED });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({
      error: {
        type: 'invalid_request_error',
        message: expect.stringMatching(/control .* is not one of its arms/),
      },
    });
  });

  it('answers 404 in OpenAI form for an unknown experiment', async () => {
    const response = await fetch(`${server.httpUrl}/v1/experiments/nope/report`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ error: { code: 'experiment_not_found', param: 'name' } });
  });
});
