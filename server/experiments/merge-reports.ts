import { z } from 'zod';
import { DropserveError } from '../../engine/errors.ts';
import { type ArmStatistics, mergeArmStatistics } from './arm-statistics.ts';
import { buildReport, type ExperimentReport, type TrippedGuardrail } from './experiment-report.ts';
import type { Guardrail } from './guardrails.ts';

/**
 * `dropserve loadtest ab-report --url A --url B …`: the replicas' reports of one experiment become
 * one, by adding their sufficient statistics and running the very function a server runs
 * (buildReport). So the merged counts, intervals and verdicts are those of one server that saw all
 * the traffic, up to float rounding in the sums.
 */
const moments = z.object({ n: z.number().int().nonnegative(), sum: z.number(), sumSq: z.number() });
const armStatistics = z.object({
  variant: z.string(),
  latency: z.object({ ttft_ms: moments, tpot_ms: moments, e2e_ms: moments, output_tokens_per_s: moments }),
  fidelity: z.object({ agreement: moments, kl: moments, delta_nll: moments }),
  ttft_over_ms: z.record(z.string(), z.number().int().nonnegative()),
});
const reportShape = z.object({
  object: z.literal('experiment.report'),
  name: z.string(),
  scope: z.enum(['replica', 'file']),
  control: z.string(),
  full_model: z.string().nullable(),
  guardrails: z.array(
    z.object({
      metric: z.enum(['agreement', 'kl', 'delta_nll', 'ttft_p90_ms']),
      op: z.enum(['>=', '<=']),
      threshold: z.number(),
    }),
  ),
  arms: z.array(
    z.object({
      variant: z.string(),
      weight: z.number(),
      drained: z.boolean(),
      guardrail: z
        .object({
          tripped: z.literal(true),
          metric: z.string(),
          op: z.string(),
          threshold: z.number(),
          at_n: z.number(),
          reason: z.string(),
        })
        .nullable(),
    }),
  ),
  statistics: z.array(armStatistics),
});

export interface ReplicaReport {
  /** Where it came from (a URL), for messages. */
  source: string;
  report: unknown;
}

export interface MergedReport {
  report: ExperimentReport;
  /** Things an operator should know: per-replica scope, differing weights or guardrails. */
  notes: string[];
  /** Per arm: the replicas on which it is drained. */
  drainedOn: Record<string, string[]>;
}

export function mergeReplicaReports(replicas: readonly ReplicaReport[]): MergedReport {
  if (replicas.length === 0) throw new DropserveError('DS_INVALID_ARGUMENT', 'no reports to merge');
  const parsed = replicas.map(({ source, report }) => {
    const result = reportShape.safeParse(report);
    if (!result.success) {
      const issue = result.error.issues[0];
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `${source}: not an experiment report (${issue?.path.join('.') || 'body'}: ${issue?.message})`,
      );
    }
    return { source, report: result.data };
  });
  const first = parsed[0]!;
  const notes: string[] = [];
  const armsKey = (r: typeof first.report): string =>
    r.arms
      .map((a) => a.variant)
      .sort()
      .join(',');
  for (const { source, report } of parsed.slice(1)) {
    if (report.name !== first.report.name) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `${source} reports experiment "${report.name}", ${first.source} "${first.report.name}"`,
      );
    }
    if (armsKey(report) !== armsKey(first.report) || report.control !== first.report.control) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `replicas disagree on experiment "${report.name}": ${first.source} has arms ${armsKey(first.report)} (control ${first.report.control}), ${source} has ${armsKey(report)} (control ${report.control}); serve it from one --experiments-file`,
      );
    }
    const weights = (r: typeof report): string => r.arms.map((a) => `${a.variant}:${a.weight}`).join(',');
    if (weights(report) !== weights(first.report)) {
      notes.push(`weights differ: ${first.source} ${weights(first.report)}, ${source} ${weights(report)}`);
    }
    if (JSON.stringify(report.guardrails) !== JSON.stringify(first.report.guardrails)) {
      notes.push(
        `guardrails differ between ${first.source} and ${source}; checks below use ${first.source}'s`,
      );
    }
  }
  const perReplica = parsed.filter((p) => p.report.scope === 'replica').map((p) => p.source);
  if (perReplica.length > 0) {
    notes.push(
      parsed.length === 1
        ? 'scope "replica": created by flag or at runtime, so other replicas may run it differently'
        : `scope "replica" on ${perReplica.join(', ')}: created by flag or at runtime, so each replica has its own copy (merged because the arms match)`,
    );
  }

  const statistics = new Map<string, ArmStatistics>();
  const tripped = new Map<string, TrippedGuardrail>();
  const drainedOn: Record<string, string[]> = {};
  for (const { source, report } of parsed) {
    for (const s of report.statistics) {
      const before = statistics.get(s.variant);
      statistics.set(s.variant, before ? mergeArmStatistics(before, s) : structuredClone(s));
    }
    for (const arm of report.arms) {
      if (arm.guardrail && !tripped.has(arm.variant)) tripped.set(arm.variant, arm.guardrail);
      if (arm.drained) (drainedOn[arm.variant] ??= []).push(source);
    }
  }
  const report = buildReport({
    name: first.report.name,
    scope: first.report.scope,
    arms: first.report.arms.map((a) => ({ variant: a.variant, weight: a.weight })),
    control: first.report.control,
    fullModel: first.report.full_model ?? undefined,
    guardrails: first.report.guardrails as Guardrail[],
    statistics,
    tripped,
    drained: new Set(Object.keys(drainedOn)),
    replicas: parsed.length,
  });
  return { report, notes, drainedOn };
}
