import {
  type CapacityOptions,
  type CapacityReport,
  formatUsers,
  runCapacity,
  verdictLines,
} from './capacity.ts';
import { formatBytes, renderTable } from './report-format.ts';
import { formatSlo } from './slo.ts';
import { fetchVariants } from './variants-client.ts';

/**
 * One capacity sweep against several servers in one run of the tool: typically the same model and
 * the same --kv-cache-bytes served with `--kv-admission worst-case` and with `on-demand`, so that the
 * users each variant holds at the SLO can be read side by side. Every server gets the same traffic,
 * SLO and levels; one sweep runs at a time, so the servers never compete for the machine.
 */
export interface ServerCapacity {
  url: string;
  /** The server's KV admission when that tells the servers apart, else its URL. */
  label: string;
  kvAdmission: string | null;
  kvBlockTokens: number | null;
  kvBudgetBytes: number | null;
  report: CapacityReport;
}

export interface CapacityComparison {
  servers: ServerCapacity[];
  /** Differences between the servers that make the comparison unfair (e.g. different KV budgets). */
  warnings: string[];
}

export interface CapacityComparisonOptions extends Omit<CapacityOptions, 'baseUrl'> {
  /** Two or more server roots, in the order the table shows them (e.g. before, after). */
  baseUrls: string[];
  /** Called before each sweep: one model on one server. */
  onServer?: (sweep: { url: string; label: string; model: string }) => void;
}

export async function runCapacityComparison(options: CapacityComparisonOptions): Promise<CapacityComparison> {
  const { baseUrls, onServer, ...sweep } = options;
  if (baseUrls.length < 2) throw new RangeError('a comparison needs at least two server URLs');
  if (new Set(baseUrls).size !== baseUrls.length) throw new RangeError('the server URLs must differ');
  const described = await Promise.all(
    baseUrls.map(async (url) => {
      const first = (await fetchVariants(url, { apiKey: options.apiKey }))?.[0] ?? null;
      return {
        url,
        kvAdmission: first?.kvAdmission ?? null,
        kvBlockTokens: first?.kvBlockTokens ?? null,
        kvBudgetBytes: first?.kvBudgetBytes ?? null,
      };
    }),
  );
  const labels = serverLabels(described);
  // Model by model, every server in turn: a pair of sweeps that are compared runs within seconds of
  // each other, so drifting load on a shared machine hits both sides alike.
  const sweeps: CapacityReport[][] = described.map(() => []);
  for (const model of sweep.models) {
    for (const [i, server] of described.entries()) {
      if (options.signal?.aborted) break;
      onServer?.({ url: server.url, label: labels[i]!, model });
      sweeps[i]!.push(await runCapacity({ ...sweep, baseUrl: server.url, models: [model], baseline: model }));
    }
  }
  const servers = described.flatMap((server, i) => {
    const report = mergeReports(sweeps[i]!, sweep);
    return report ? [{ ...server, label: labels[i]!, report }] : [];
  });
  return { servers, warnings: comparisonWarnings(described) };
}

/** One server's per-model sweeps as the report a single `runCapacity` over all the models gives. */
function mergeReports(
  reports: CapacityReport[],
  sweep: Omit<CapacityOptions, 'baseUrl'>,
): CapacityReport | null {
  const first = reports[0];
  if (!first) return null;
  const variants = reports.flatMap((r) => r.variants);
  const baseline = sweep.baseline ?? sweep.models[0]!;
  const { slo, sloPercentile, levels } = first.config;
  return {
    ...first,
    config: { ...first.config, models: variants.map((v) => v.model), baseline },
    variantsAvailable: reports.every((r) => r.variantsAvailable),
    variants,
    verdicts: verdictLines(variants, baseline, slo, sloPercentile, levels),
  };
}

/** kv_admission names the servers when it tells them apart; otherwise their URLs do. */
export function serverLabels(servers: readonly { url: string; kvAdmission: string | null }[]): string[] {
  const admissions = servers.map((s) => s.kvAdmission);
  const distinct = admissions.every((a) => a !== null) && new Set(admissions).size === admissions.length;
  return distinct ? (admissions as string[]) : servers.map((s) => s.url.replace(/^https?:\/\//, ''));
}

export function comparisonWarnings(
  servers: readonly { url: string; kvBudgetBytes: number | null; kvBlockTokens: number | null }[],
): string[] {
  const warnings: string[] = [];
  const budgets = new Set(servers.map((s) => s.kvBudgetBytes));
  if (budgets.size > 1) {
    warnings.push(
      `the servers' KV budgets differ (${servers.map((s) => `${s.url}: ${formatBytes(s.kvBudgetBytes)}`).join(', ')}): users at the SLO are not comparable as the same memory`,
    );
  }
  const blocks = new Set(servers.map((s) => s.kvBlockTokens));
  if (blocks.size > 1) {
    warnings.push(
      `the servers' KV block sizes differ (${servers.map((s) => `${s.url}: ${s.kvBlockTokens ?? '?'} tokens`).join(', ')})`,
    );
  }
  return warnings;
}

/** Users at the SLO per variant, one column per server, with the last-to-first ratio. */
export function formatCapacityComparison(comparison: CapacityComparison): string {
  const { servers } = comparison;
  const first = servers[0];
  if (!first) return 'no server was measured';
  const last = servers[servers.length - 1]!;
  const c = first.report.config;
  const out = [
    `users at ${formatSlo(c.slo, c.sloPercentile)}, ${servers.length} servers, same traffic and levels (${c.levels.join(', ')})`,
    renderTable(
      ['server', 'url', 'KV admission', 'block tokens', 'KV budget'],
      servers.map((s) => [
        s.label,
        s.url,
        s.kvAdmission ?? '-',
        s.kvBlockTokens === null ? '-' : String(s.kvBlockTokens),
        formatBytes(s.kvBudgetBytes),
      ]),
      ['l', 'l', 'l', 'r', 'r'],
    ),
    '',
  ];
  const joined = (values: (number | string | null)[]): string => values.map((v) => v ?? '-').join(' / ');
  const labels = servers.map((s) => s.label).join(' / ');
  const rows = first.report.variants.map((base) => {
    const each = servers.map((s) => s.report.variants.find((v) => v.model === base.model) ?? null);
    const final = each[each.length - 1];
    const ratio =
      final && base.maxConcurrency > 0 ? `${(final.maxConcurrency / base.maxConcurrency).toFixed(1)}×` : '-';
    return [
      base.model,
      ...each.map((v) => (v ? formatUsers(v) : '-')),
      ratio,
      joined(each.map((v) => (v ? v.goodputAtMax.toFixed(2) : null))),
      joined(each.map((v) => v?.maxRunningObserved ?? null)),
      joined(each.map((v) => preemptionsOf(v?.levels ?? []))),
    ];
  });
  out.push(
    renderTable(
      [
        'variant',
        ...servers.map((s) => `users ${s.label}`),
        `${last.label} / ${first.label}`,
        `goodput req/s (${labels})`,
        `max running (${labels})`,
        `preempted (${labels})`,
      ],
      rows,
      ['l', ...servers.map((): 'r' => 'r'), 'r', 'r', 'r', 'r'],
    ),
  );
  for (const warning of comparison.warnings) out.push(`warning: ${warning}`);
  return out.join('\n');
}

function preemptionsOf(levels: readonly { preemptions: number | null }[]): number | null {
  const counted = levels.map((l) => l.preemptions).filter((p): p is number => p !== null);
  return counted.length === 0 ? null : counted.reduce((a, b) => a + b, 0);
}

/** One report whose variants are every server's, named "<model> (<server label>)", for one chart. */
export function mergedForChart(comparison: CapacityComparison): CapacityReport | null {
  const first = comparison.servers[0];
  if (!first) return null;
  return {
    ...first.report,
    variants: comparison.servers.flatMap((s) =>
      s.report.variants.map((v) => ({ ...v, model: `${v.model} (${s.label})` })),
    ),
  };
}
