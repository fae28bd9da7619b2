import type { ExperimentReport, FidelityComparison, LatencyComparison } from './experiment-report.ts';

/**
 * An experiment report as a terminal table: per arm and metric the control and arm means, the
 * ratio (latency) or difference (fidelity) with its 95% interval, the verdict of the 95%
 * confidence sequence, and the observations behind it; then the guardrail lines.
 */
export function formatExperimentReport(
  report: ExperimentReport,
  extra: {
    notes?: readonly string[];
    drainedOn?: Record<string, string[]>;
    sources?: readonly string[];
  } = {},
): string {
  const lines: string[] = [];
  const where = extra.sources?.length ? ` from ${extra.sources.join(', ')}` : '';
  lines.push(
    `experiment ${report.name}: ${report.replicas} replica${report.replicas === 1 ? '' : 's'}${where}, scope ${report.scope}`,
  );
  lines.push(
    `control ${report.control}${report.control === report.full_model ? ' (the full model)' : ''}; ` +
      'ratio/difference with 95% CI; verdict by 95% confidence sequence (valid while watching)',
  );
  for (const note of extra.notes ?? []) lines.push(`note: ${note}`);
  const header = ['metric', 'control', 'arm', 'arm/control [95% CI]', 'verdict', 'n (ctl/arm)'];
  for (const arm of report.arms) {
    if (arm.is_control) continue;
    lines.push('');
    const share = `${(arm.share * 100).toFixed(0)}%`;
    lines.push(
      `arm ${arm.variant}  weight ${arm.weight} (${share})  requests ${arm.requests}  scored ${arm.scored_requests}` +
        (arm.drained ? '  DRAINED (no new traffic)' : ''),
    );
    const rows: string[][] = [];
    for (const [metric, c] of Object.entries(arm.latency ?? {}) as [string, LatencyComparison][]) {
      rows.push([
        metric,
        num(c.control_mean),
        num(c.arm_mean),
        c.ratio === null
          ? '–'
          : `${c.ratio.toFixed(3)}× [${c.ci95![0].toFixed(3)}, ${c.ci95![1].toFixed(3)}]`,
        c.verdict,
        `${c.n_control}/${c.n_arm}`,
      ]);
    }
    for (const [metric, c] of Object.entries(arm.fidelity ?? {}) as [string, FidelityComparison][]) {
      rows.push([
        metric,
        num(c.control_mean),
        c.arm_ci95 ? `${num(c.arm_mean)} [${num(c.arm_ci95[0])}, ${num(c.arm_ci95[1])}]` : num(c.arm_mean),
        c.difference === null
          ? '–'
          : `${signed(c.difference)} [${signed(c.ci95![0])}, ${signed(c.ci95![1])}] (diff)`,
        c.verdict,
        `${c.control_is_full_model ? 'full' : c.n_control}/${c.n_arm}`,
      ]);
    }
    lines.push(...table([header, ...rows]).map((l) => `  ${l}`));
    for (const check of arm.guardrail_checks) {
      const cs = check.cs95 ? `[${num(check.cs95[0])}, ${num(check.cs95[1])}]` : '–';
      const what = check.metric === 'ttft_p90_ms' ? `share over ${check.threshold} ms` : check.metric;
      lines.push(
        `  guardrail ${check.metric}${check.op}${check.threshold}: ${check.breached ? 'BREACHED' : 'holds'} (${what} 95% CS ${cs}, n=${check.n})`,
      );
    }
    if (arm.guardrail) {
      const on = extra.drainedOn?.[arm.variant];
      lines.push(
        `  guardrail tripped: ${arm.guardrail.metric}${arm.guardrail.op}${arm.guardrail.threshold} at n=${arm.guardrail.at_n}` +
          (on?.length ? `; drained on ${on.join(', ')}` : ''),
      );
    }
  }
  return lines.join('\n');
}

function num(x: number | null): string {
  if (x === null || !Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a === 0) return '0';
  if (a >= 100) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toFixed(3);
}

const signed = (x: number): string => (x >= 0 ? `+${num(x)}` : num(x));

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) =>
    r
      .map((cell, i) => (i === 0 || i === 4 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('  ')
      .trimEnd(),
  );
}
