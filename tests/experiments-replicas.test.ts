import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoadtestCommand } from '../cli/loadtest.ts';
import type { ExperimentReport } from '../server/experiments/experiment-report.ts';
import { parseGuardrail } from '../server/experiments/guardrails.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { experimentReport } from './support/experiment-traffic.ts';
import { expectSameLatency, printedBy, reportOfAllTraffic } from './support/merged-reports.ts';
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

    const [a, b] = await Promise.all(servers.map((s) => experimentReport(s, 'ab')));
    const urls = servers.flatMap((s) => ['--url', s.httpUrl]);
    const printed = await printedBy('log', async () => {
      expect(await runLoadtestCommand(['ab-report', ...urls, '--experiment', 'ab', '--json'])).toBe(0);
      expect(await runLoadtestCommand(['ab-report', ...urls, '--experiment', 'ab'])).toBe(0);
    });
    const merged = JSON.parse(printed[0]!) as ExperimentReport & { notes: string[] };
    expect(merged.replicas).toBe(2);
    expect(merged.notes.join('\n')).toMatch(/scope "replica"/);

    // What one server holding every observation reports: buildReport over the summed statistics.
    const oneServer = reportOfAllTraffic([a!, b!]);
    const armOf = (r: ExperimentReport) => r.arms.find((x) => x.variant === PRUNED)!;
    const controlOf = (r: ExperimentReport) => r.arms.find((x) => x.is_control)!;
    expect(armOf(merged).requests).toBe(armOf(a!).requests + armOf(b!).requests);
    expect(controlOf(merged).requests).toBe(controlOf(a!).requests + controlOf(b!).requests);
    expect(armOf(merged).requests + controlOf(merged).requests).toBe(2 * REQUESTS_PER_REPLICA);
    expect(armOf(merged).scored_requests).toBe(armOf(a!).scored_requests + armOf(b!).scored_requests);
    expectSameLatency(armOf(merged), armOf(oneServer));
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
    const urls = servers.flatMap((s) => ['--url', s.httpUrl]);
    const errors = await printedBy('error', async () => {
      expect(await runLoadtestCommand(['ab-report', ...urls, '--experiment', 'ab'])).toBe(1);
    });
    expect(errors.join('\n')).toMatch(/replicas disagree on experiment "ab"/);
  });
});
