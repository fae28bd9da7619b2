import type { ExperimentReport } from '../../server/experiments/experiment-report.ts';
import { parseGuardrail } from '../../server/experiments/guardrails.ts';
import { type RunningServer, startServer } from '../../server/start-server.ts';
import { e2eServerOptions, eventually, scrapeMetrics, sumOf } from './test-server.ts';

/** The control of the e2e experiment "ab" (see startPrunedAbServer). */
export const AB_FULL = 'stories260K';
/** Its arm: stories260K without 3 of its 5 attention layers (agreement ≈ 0.36 in docs/variants.md). */
export const AB_PRUNED = 'stories260K:attn-3';

/**
 * A server running experiment "ab", AB_FULL against AB_PRUNED at equal weights, with every pruned
 * request shadow-scored and the guardrail agreement>=0.85 (which the pruned arm trips).
 */
export function startPrunedAbServer(): Promise<RunningServer> {
  return startServer(
    e2eServerOptions('stories260K', {
      variants: [{ name: 'attn-3', spec: 'attn:2,3,4' }],
      experiments: [
        {
          name: 'ab',
          arms: [
            { variant: AB_FULL, weight: 1 },
            { variant: AB_PRUNED, weight: 1 },
          ],
        },
      ],
      experimentGuardrails: [parseGuardrail('agreement>=0.85')],
      shadowRate: 1,
    }),
  );
}

/** Story openings the experiment suites cycle through (stories260K continues them sensibly). */
const OPENINGS = [
  'Once upon a time, there was a little girl named Lily.',
  'One day, a boy named Tom went to the park.',
  'The cat saw a big dog in the garden.',
  'Sue had a red ball. She liked to play',
  'There was a small bird who wanted to fly.',
  'Mom said it was time to go to bed.',
];

export async function experimentReport(server: RunningServer, name: string): Promise<ExperimentReport> {
  const response = await fetch(`${server.httpUrl}/v1/experiments/${name}/report`);
  if (response.status !== 200) throw new Error(`report of ${name}: HTTP ${response.status}`);
  return (await response.json()) as ExperimentReport;
}

/** One completion to the experiment as `user`; resolves to the variant that served it. */
export async function completeAs(
  server: RunningServer,
  experiment: string,
  user: string,
  i: number,
): Promise<string> {
  const response = await fetch(`${server.httpUrl}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: experiment, prompt: OPENINGS[i % OPENINGS.length], max_tokens: 24, user }),
  });
  if (response.status !== 200) throw new Error(`completion: HTTP ${response.status}`);
  await response.json();
  return response.headers.get('x-dropserve-variant')!;
}

/**
 * Sends requests to an experiment one at a time (user-0, user-1, …) until the arm's guardrail has
 * tripped or `maxRequests` were sent. After each request served by the arm it waits until that
 * request's shadow score is accounted for (scored or dropped), so the run is a sequence of states,
 * never a race with the background scorer. Returns the last report and the users the arm served.
 */
export async function driveUntilTripped(
  server: RunningServer,
  experiment: string,
  arm: string,
  maxRequests: number,
): Promise<{ report: ExperimentReport; armUsers: string[] }> {
  const armUsers: string[] = [];
  let report = await experimentReport(server, experiment);
  for (let i = 0; i < maxRequests; i++) {
    const user = `user-${i}`;
    if ((await completeAs(server, experiment, user, i)) === arm) {
      armUsers.push(user);
      await eventually(async () => {
        const metrics = await scrapeMetrics(server.httpUrl);
        const dropped = sumOf(metrics, 'dropserve:shadow_dropped_total', { variant: arm });
        const scored = sumOf(metrics, 'dropserve:fidelity_top1_agreement_count', { variant: arm });
        return scored + dropped >= armUsers.length;
      });
    }
    report = await experimentReport(server, experiment);
    if (report.arms.find((a) => a.variant === arm)?.guardrail) break;
  }
  return { report, armUsers };
}
