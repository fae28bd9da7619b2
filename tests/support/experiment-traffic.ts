import type { ExperimentReport } from '../../server/experiments/experiment-report.ts';
import type { RunningServer } from '../../server/start-server.ts';
import { eventually, scrapeMetrics, sumOf } from './test-server.ts';

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
