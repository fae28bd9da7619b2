import { type CapacityReport, formatUsers, type StopReason, type VariantCapacity } from './capacity.ts';
import type { LoadtestReport } from './loadtest.ts';
import type { LoadtestSummary } from './metrics.ts';
import { endpointPath } from './openai-stream.ts';
import { formatSlo, hasSlo, SLO_METRICS, sloMetricLabel } from './slo.ts';
import { type DistributionStats, statAtPercentile } from './stats.ts';

/** Console renderings of load-test and capacity reports (plain text, fixed-width columns). */

type Align = 'l' | 'r';

export function renderTable(
  headers: readonly string[],
  rows: readonly string[][],
  align: readonly Align[],
): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (align[i] === 'r' ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function num(value: number | null | undefined, digits = 2): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '-';
  return value.toFixed(digits);
}

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

function errorsText(summary: LoadtestSummary): string {
  const kinds = Object.entries(summary.errorsByKind).sort((a, b) => b[1] - a[1]);
  return kinds.length === 0 ? '' : `  (${kinds.map(([k, n]) => `${k} ×${n}`).join(', ')})`;
}

function keyValues(pairs: readonly [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

function latencyRows(summary: LoadtestSummary): string[][] {
  const row = (name: string, s: DistributionStats): string[] => [
    name,
    String(s.count),
    num(s.mean),
    num(s.p50),
    num(s.p90),
    num(s.p95),
    num(s.p99),
    num(s.max),
  ];
  return [
    row('TTFT', summary.ttftMs),
    row('TPOT', summary.tpotMs),
    row('ITL', summary.itlMs),
    row('E2E', summary.e2eMs),
  ];
}

export function loadDescription(report: LoadtestReport): string {
  const c = report.config;
  const bound = [
    c.requests === null ? null : `${c.requests} requests`,
    c.durationS === null ? null : `${c.durationS} s`,
  ]
    .filter((x) => x !== null)
    .join(' or ');
  const warmup = c.warmup > 0 ? ` (+${c.warmup} warmup)` : '';
  if (c.mode === 'closed') return `closed loop, ${c.concurrency} concurrent users, ${bound}${warmup}`;
  const shape = c.burstiness === 1 ? 'Poisson' : `gamma burstiness ${c.burstiness}`;
  const cap = c.concurrency === null ? '' : `, at most ${c.concurrency} in flight`;
  return `open loop, ${c.ratePerS} req/s ${shape}${cap}, ${bound}${warmup}`;
}

export function formatLoadtestReport(report: LoadtestReport): string {
  const c = report.config;
  const s = report.summary;
  const header = keyValues([
    ['target', `${c.baseUrl.replace(/\/+$/, '')}${endpointPath(c.endpoint)}  model ${c.model}`],
    ['load', loadDescription(report)],
    ['dataset', `${c.dataset}${c.ignoreEos ? ', ignore_eos' : ''}, seed ${c.seed}`],
    ['SLO', formatSlo(c.slo)],
    ['commit', `${report.commit}  started ${report.startedAt}`],
  ]);
  const tokensNote =
    s.outputTokensFromChunks > 0
      ? `  (${s.outputTokensFromChunks} requests without usage: counted chunks)`
      : '';
  const goodput =
    s.goodput === null
      ? '- (no --slo)'
      : `${num(s.goodput)}  (${s.goodRequests}/${s.completed} requests met the SLO)`;
  const numbers = keyValues([
    ['Successful requests', String(s.completed)],
    ['Failed requests', `${s.failed}${errorsText(s)}`],
    ['Benchmark duration (s)', num(s.durationS)],
    ['Total input tokens', String(s.totalInputTokens)],
    ['Total output tokens', `${s.totalOutputTokens}${tokensNote}`],
    ['Request throughput (req/s)', num(s.requestThroughput)],
    ['Output token throughput (tok/s)', num(s.outputThroughput)],
    ['Total token throughput (tok/s)', num(s.totalTokenThroughput)],
    ['Goodput (req/s)', goodput],
    ['Max requests in flight', String(s.maxConcurrency)],
  ]);
  const table = renderTable(
    ['latency (ms)', 'n', 'mean', 'p50', 'p90', 'p95', 'p99', 'max'],
    latencyRows(s),
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
  const rule = '='.repeat(22);
  return [`${rule} dropserve loadtest ${rule}`, header, '', numbers, '', table, ''].join('\n');
}

/** Baseline, candidate and candidate/baseline for the headline numbers of two runs. */
export function formatComparison(baseline: LoadtestReport, candidate: LoadtestReport): string {
  const b = baseline.summary;
  const c = candidate.summary;
  const rows: [string, number | null, number | null, number?][] = [
    ['request throughput (req/s)', b.requestThroughput, c.requestThroughput],
    ['output throughput (tok/s)', b.outputThroughput, c.outputThroughput],
    ['goodput (req/s)', b.goodput, c.goodput],
    ['TTFT p50 (ms)', b.ttftMs.p50, c.ttftMs.p50],
    ['TTFT p99 (ms)', b.ttftMs.p99, c.ttftMs.p99],
    ['TPOT p50 (ms)', b.tpotMs.p50, c.tpotMs.p50],
    ['TPOT p99 (ms)', b.tpotMs.p99, c.tpotMs.p99],
    ['ITL p99 (ms)', b.itlMs.p99, c.itlMs.p99],
    ['E2E p99 (ms)', b.e2eMs.p99, c.e2eMs.p99],
    ['failed requests', b.failed, c.failed, 0],
  ];
  const ratio = (x: number | null, y: number | null): string =>
    x === null || y === null || !Number.isFinite(x) || !Number.isFinite(y) || x === 0
      ? '-'
      : `${(y / x).toFixed(2)}×`;
  const table = renderTable(
    ['metric', 'baseline', 'candidate', 'candidate/baseline'],
    rows.map(([name, x, y, digits]) => [name, num(x, digits), num(y, digits), ratio(x, y)]),
    ['l', 'r', 'r', 'r'],
  );
  const who = (r: LoadtestReport): string => `${r.config.model} @ ${r.commit} (${loadDescription(r)})`;
  return [`baseline:  ${who(baseline)}`, `candidate: ${who(candidate)}`, '', table, ''].join('\n');
}

const STOP_TEXT: Record<StopReason, string> = {
  slo_broken: 'SLO broken',
  errors: 'errors',
  saturated: 'saturated',
  max_level: 'last level',
  aborted: 'aborted',
};

export function stopText(v: VariantCapacity): string {
  return v.stoppedAt === null ? STOP_TEXT[v.stopReason] : `${STOP_TEXT[v.stopReason]} at ${v.stoppedAt}`;
}

export function formatCapacityLevel(
  model: string,
  level: VariantCapacity['levels'][number],
  percentile: number,
): string {
  const s = level.summary;
  const observed = SLO_METRICS.filter((m) => level.observed[m] !== undefined)
    .map((m) => `p${percentile} ${sloMetricLabel(m)} ${num(level.observed[m], 1)} ms`)
    .join(', ');
  const running = level.maxRunning === null ? '' : `, running ≤ ${level.maxRunning}`;
  const errors = s.failed > 0 ? `, ${s.failed} failed` : '';
  return (
    `${model}  ${String(level.concurrency).padStart(3)} users: ${num(s.requestThroughput)} req/s, ` +
    `goodput ${num(s.goodput)}, ${observed}${errors}${running}  ${level.holdsSlo ? 'holds' : 'BREAKS'}`
  );
}

export function formatCapacityReport(report: CapacityReport): string {
  const c = report.config;
  const p = c.sloPercentile;
  const rule = '='.repeat(22);
  const out: string[] = [
    `${rule} dropserve capacity ${rule}`,
    keyValues([
      ['target', `${c.baseUrl.replace(/\/+$/, '')}${endpointPath(c.endpoint)}`],
      [
        'SLO',
        `${formatSlo(c.slo, p)}${c.maxErrorRate > 0 ? `, error rate ≤ ${c.maxErrorRate}` : ', no errors'}`,
      ],
      ['levels', `${c.levels.join(', ')} concurrent users (closed loop)`],
      [
        'per level',
        c.requestsPerLevel === null ? 'max(4 × users, 16) requests' : `${c.requestsPerLevel} requests`,
      ],
      ['dataset', `${c.dataset}${c.ignoreEos ? ', ignore_eos' : ''}`],
      ['commit', `${report.commit}  started ${report.startedAt}`],
    ]),
    '',
  ];
  const sloMetrics = SLO_METRICS.filter((m) => c.slo[m] !== undefined);
  // Servers that report preemptions (KV on demand) get a column; reports from older servers do not.
  const showsPreemptions = report.variants.some((v) =>
    v.levels.some((l) => (l.preemptions ?? null) !== null),
  );
  for (const v of report.variants) {
    out.push(v.model);
    out.push(
      renderTable(
        [
          'users',
          'req/s',
          'goodput',
          'out tok/s',
          ...sloMetrics.map((m) => `p${p} ${sloMetricLabel(m)} ms`),
          'failed',
          'running',
          ...(showsPreemptions ? ['preempted'] : []),
          'SLO',
        ],
        v.levels.map((l) => [
          String(l.concurrency),
          num(l.summary.requestThroughput),
          num(l.summary.goodput),
          num(l.summary.outputThroughput, 1),
          ...sloMetrics.map((m) => num(statAtPercentile(l.summary[m], p), 1)),
          String(l.summary.failed),
          l.maxRunning === null ? '-' : String(l.maxRunning),
          ...(showsPreemptions ? [l.preemptions === null ? '-' : String(l.preemptions)] : []),
          l.holdsSlo ? 'holds' : 'BREAKS',
        ]),
        [
          'r',
          'r',
          'r',
          'r',
          ...sloMetrics.map((): Align => 'r'),
          'r',
          'r',
          ...(showsPreemptions ? ['r' as const] : []),
          'l',
        ],
      ),
    );
    out.push('');
  }
  out.push(
    renderTable(
      [
        'variant',
        'max users',
        'goodput',
        'out tok/s',
        'stopped',
        'KV B/token',
        'KV budget',
        'tokens in budget',
        'max running',
      ],
      report.variants.map((v) => [
        v.model,
        formatUsers(v),
        num(v.goodputAtMax),
        num(v.outputThroughputAtMax, 1),
        stopText(v),
        v.kvBytesPerToken === null ? '-' : String(v.kvBytesPerToken),
        formatBytes(v.kvBudgetBytes),
        v.kvBudgetTokens === null ? '-' : String(v.kvBudgetTokens),
        v.maxRunningObserved === null ? '-' : String(v.maxRunningObserved),
      ]),
      ['l', 'r', 'r', 'r', 'l', 'r', 'r', 'r', 'r'],
    ),
  );
  if (!report.variantsAvailable)
    out.push('(GET /v1/variants not available: no KV or running-sequence figures)');
  out.push('');
  for (const verdict of report.verdicts) out.push(`verdict: ${verdict}`);
  if (!hasSlo(c.slo)) out.push('(no SLO)');
  return `${out.join('\n')}\n`;
}
