import { expect, vi } from 'vitest';
import {
  type ArmStatistics,
  type LatencyMetric,
  mergeArmStatistics,
} from '../../server/experiments/arm-statistics.ts';
import {
  type ArmReport,
  buildReport,
  type ExperimentReport,
} from '../../server/experiments/experiment-report.ts';

/** Runs `run` with console.log or console.error captured; resolves to the lines it printed. */
export async function printedBy(stream: 'log' | 'error', run: () => Promise<void>): Promise<string[]> {
  const printed: string[] = [];
  const spy = vi.spyOn(console, stream).mockImplementation((...args: unknown[]) => {
    printed.push(args.join(' '));
  });
  try {
    await run();
  } finally {
    spy.mockRestore();
  }
  return printed;
}

/**
 * What one server that had received every replica's traffic would report: buildReport over the
 * replicas' summed sufficient statistics, with the first replica's configuration.
 */
export function reportOfAllTraffic(replicaReports: readonly ExperimentReport[]): ExperimentReport {
  const all = new Map<string, ArmStatistics>();
  for (const stats of replicaReports.flatMap((r) => r.statistics)) {
    const before = all.get(stats.variant);
    all.set(stats.variant, before ? mergeArmStatistics(before, stats) : stats);
  }
  const first = replicaReports[0]!;
  return buildReport({
    name: first.name,
    scope: first.scope,
    arms: first.arms.map((x) => ({ variant: x.variant, weight: x.weight })),
    control: first.control,
    fullModel: first.full_model ?? undefined,
    guardrails: first.guardrails,
    statistics: all,
    tripped: new Map(),
    drained: new Set(),
    replicas: replicaReports.length,
  });
}

/** Asserts that an arm's latency comparisons equal the expected ones (intervals to 1e-9). */
export function expectSameLatency(actual: ArmReport, expected: ArmReport): void {
  for (const [metric, c] of Object.entries(actual.latency!)) {
    const want = expected.latency![metric as LatencyMetric];
    expect(c.verdict, metric).toBe(want.verdict);
    expect(c.n_arm, metric).toBe(want.n_arm);
    if (want.ratio === null) continue;
    expect(c.ratio!).toBeCloseTo(want.ratio, 9);
    expect(c.ci95![0]).toBeCloseTo(want.ci95![0], 9);
    expect(c.ci95![1]).toBeCloseTo(want.ci95![1], 9);
    expect(c.cs95![0]).toBeCloseTo(want.cs95![0], 9);
  }
}
