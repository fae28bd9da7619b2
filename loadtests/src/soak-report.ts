import { formatBytes, num, renderTable } from './report-format.ts';
import type { SoakReport, SoakSample } from './soak.ts';
import { bucketMeans, type Drift } from './soak-drift.ts';

/** Console renderings of a soak: one progress line per sample, and the final summary. */

/** 0s, 45s, 2m05s, 1h02m. */
export function formatElapsed(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function formatSoakProgress(sample: SoakSample): string {
  return [
    `soak ${formatElapsed(sample.atS).padStart(6)}`,
    `requests ${sample.requests}`,
    `errors ${sample.errors}`,
    `aborted ${sample.aborted}`,
    `in flight ${sample.inFlight}`,
    `rss ${formatBytes(sample.rssBytes)}`,
    `fds ${sample.openFds ?? '-'}`,
  ].join('  ');
}

function formatRange({ min, max }: { min: number; max: number }): string {
  return min === max ? String(min) : `${min}-${max}`;
}

function signed(value: number, digits: number): string {
  return `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`;
}

function signedBytes(bytes: number): string {
  return `${bytes >= 0 ? '+' : '-'}${formatBytes(Math.abs(bytes))}`;
}

function driftRow(name: string, drift: Drift | null, isBytes: boolean): string[] {
  if (!drift) return [name, '-', '-', '-', '-', '-'];
  const value = (v: number): string => (isBytes ? formatBytes(v) : String(v));
  const change = (v: number): string => (isBytes ? signedBytes(v) : signed(v, 0));
  const pct = drift.changePct === null ? '' : ` (${signed(drift.changePct, 1)}%)`;
  const perHour = (v: number): string => (isBytes ? `${signedBytes(v)}/h` : `${signed(v, 1)}/h`);
  return [
    name,
    `${value(drift.from)} @ ${formatElapsed(drift.fromS)}`,
    `${value(drift.to)} @ ${formatElapsed(drift.toS)}`,
    change(drift.change) + pct,
    perHour(drift.changePerHour),
    perHour(drift.slopePerHour),
  ];
}

/** Mean RSS per minute (per longer bucket on long runs, at most about 20 of them). */
function rssTimeline(samples: readonly SoakSample[], durationS: number): string {
  const bucketS = 60 * Math.max(1, Math.ceil(durationS / 60 / 20));
  const means = bucketMeans(
    samples.map((s) => ({ atS: s.atS, value: s.rssBytes })),
    bucketS,
  );
  const mib = means.map((m) => `${Math.round(m.startS / 60)}m ${(m.mean / 1024 / 1024).toFixed(0)}`);
  return `RSS mean per ${bucketS === 60 ? 'minute' : formatElapsed(bucketS)} (MiB): ${mib.join(', ')}`;
}

/** "stop 120, length 800" from counts, zeros and empty maps as "-". */
function counts(map: Record<string, number>): string {
  const parts = Object.entries(map)
    .filter(([, n]) => n !== 0)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, n]) => `${k} ${n}`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

export function formatSoakReport(report: SoakReport): string {
  const { config, outcomes, aborts, mix, throughput, resources } = report;
  const share = (x: number): string => `${Math.round(x * 100)}%`;
  const stop = [
    config.durationS === null ? null : formatElapsed(config.durationS),
    config.requests === null ? null : `${config.requests} requests`,
  ]
    .filter((s) => s !== null)
    .join(' or ');
  const lines = [
    '======================== dropserve loadtest soak ========================',
    `target     ${config.baseUrl}  models ${config.models.join(', ')}`,
    `load       closed loop, ${config.concurrency} workers, until ${stop}; streaming ${share(config.streamShare)}, ` +
      `chat ${share(config.chatShare)}, client aborts ${share(config.abortShare)}`,
    `requests   ${config.promptWords} prompt words, max_tokens ${formatRange(config.maxTokens)}, ` +
      `temperature ${config.temperature}, seed ${config.seed}`,
    `resources  ${resources.source}, every ${config.sampleEveryS}s; drift from ${formatElapsed(config.driftFromS)}`,
    `commit     ${report.commit}  started ${report.startedAt}`,
    '',
    `Duration                         ${formatElapsed(report.durationS)} (${num(report.durationS, 1)} s)`,
    `Requests                         ${report.requests}`,
    `  ok                             ${outcomes.ok}`,
    `  aborted by the client          ${outcomes.aborted}  (planned ${aborts.planned}; finished before the abort point ${aborts.finishedFirst})`,
    ...Object.entries(aborts.byPoint).map(
      ([point, a]) => `    ${point.padEnd(29)}${a.made} of ${a.planned} planned`,
    ),
    ...(outcomes.interrupted > 0 ? [`  interrupted (Ctrl-C)           ${outcomes.interrupted}`] : []),
    `  errors                         ${report.errors}`,
    ...(['http_error', 'stream_error', 'protocol_error', 'network_error'] as const)
      .filter((k) => outcomes[k] > 0)
      .map((k) => `    ${k.padEnd(29)}${outcomes[k]}`),
    `Mix                              streaming ${mix.streaming} / non-streaming ${mix.nonStreaming}; ` +
      `chat ${mix.chat} / completions ${mix.completions}`,
    `  by model                       ${counts(mix.byModel)}`,
    `Throughput                       ${num(throughput.okPerS)} ok req/s, ${num(throughput.outputTokensPerS, 1)} output tok/s ` +
      `(${throughput.completionTokens} tokens in ok requests)`,
    '',
    renderTable(
      ['server', 'reference', 'end', 'drift', 'per hour (end)', 'per hour (fit)'],
      [driftRow('RSS', resources.rss, true), driftRow('open fds', resources.openFds, false)],
      ['l', 'r', 'r', 'r', 'r', 'r'],
    ),
  ];
  if (resources.rss) {
    const { min, max, samples, windowS, fromS, toS, fromMean, toMean } = resources.rss;
    lines.push(
      `RSS means over ${formatElapsed(windowS)}: ${formatBytes(fromMean)} from ${formatElapsed(fromS)}, ` +
        `${formatBytes(toMean)} up to ${formatElapsed(toS)} (${signedBytes(toMean - fromMean)})`,
      `RSS from the reference on: ${formatBytes(min)} to ${formatBytes(max)} over ${samples} samples`,
      rssTimeline(resources.samples, report.durationS),
    );
  }
  if (resources.rss?.isReferenceEarly) {
    lines.push(`(the run ended before ${formatElapsed(config.driftFromS)}: drift is from the first sample)`);
  }
  if (resources.note) lines.push(`no resource readings: ${resources.note}`);
  lines.push('');
  if (report.server) {
    const finished = report.server.finishedByReason;
    const serverDone = (finished.stop ?? 0) + (finished.length ?? 0);
    const serverAll = Object.values(finished).reduce((a, b) => a + b, 0);
    lines.push(
      'server counters over the run (dropserve:request_success_total, transport http)',
      `  finished_reason  ${counts(finished)}`,
      `  rejected         ${counts(report.server.rejectedByReason)}`,
      `  finished ${serverAll} vs ${report.requests} sent here; stop+length ${serverDone} vs ${outcomes.ok} ok here; ` +
        `abort ${finished.abort ?? 0} vs ${outcomes.aborted} aborted here`,
      '  (an abort can land after the server finished the request, or before it admitted it)',
    );
  } else {
    lines.push('server counters: /metrics did not answer');
  }
  if (report.errors > 0) {
    lines.push('', `errors by kind: ${counts(report.errorsByDetail)}`);
    for (const e of report.errorSamples) {
      const how = `${e.isStreaming ? 'stream' : 'non-stream'} ${e.endpoint} ${e.model}`;
      lines.push(`  #${e.index} ${e.kind} ${e.detail ?? ''} (${how}): ${e.message ?? ''}`);
    }
    if (report.errorSamples.length < report.errors) {
      lines.push(`  … ${report.errors - report.errorSamples.length} more in the counts above`);
    }
  }
  return lines.join('\n');
}
