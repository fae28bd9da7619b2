import { readdir, readFile } from 'node:fs/promises';
import { getTextOrNull } from './get-text.ts';

/**
 * The server's memory, open file descriptors and request counters, read while a soak runs. Two
 * sources: the server's own Prometheus /metrics (prom-client's process_resident_memory_bytes and
 * process_open_fds, present unless the server turned process metrics off; works remotely), or
 * /proc/PID when the server runs on this machine (works whatever the server exports).
 */

export interface ResourceReading {
  rssBytes: number | null;
  openFds: number | null;
}

/** Series text (`name{label="v",…}`) → value, from Prometheus text exposition. */
export type MetricSamples = Map<string, number>;

export function parsePrometheusText(text: string): MetricSamples {
  const samples: MetricSamples = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    // Label values may hold spaces, so the value is what follows the closing brace (or the name).
    const close = line.lastIndexOf('}');
    const rest = (close < 0 ? line : line.slice(close + 1)).trim().split(/\s+/);
    const value = Number(rest[close < 0 ? 1 : 0]);
    const series = close < 0 ? rest[0]! : line.slice(0, close + 1);
    if (!Number.isNaN(value)) samples.set(series, value);
  }
  return samples;
}

function labelsOf(series: string): Record<string, string> {
  const labels: Record<string, string> = {};
  const open = series.indexOf('{');
  if (open < 0) return labels;
  for (const m of series.slice(open).matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  }
  return labels;
}

function nameOf(series: string): string {
  const open = series.indexOf('{');
  return open < 0 ? series : series.slice(0, open);
}

/** Sums of one metric grouped by one label, over the series that carry every label in `where`. */
export function sumByLabel(
  samples: MetricSamples,
  name: string,
  groupBy: string,
  where: Record<string, string> = {},
): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const [series, value] of samples) {
    if (nameOf(series) !== name) continue;
    const labels = labelsOf(series);
    if (!Object.entries(where).every(([k, v]) => labels[k] === v)) continue;
    const key = labels[groupBy] ?? '';
    sums[key] = (sums[key] ?? 0) + value;
  }
  return sums;
}

export function processResources(samples: MetricSamples): ResourceReading {
  return {
    rssBytes: samples.get('process_resident_memory_bytes') ?? null,
    openFds: samples.get('process_open_fds') ?? null,
  };
}

/** What the server counted for HTTP requests: finishes by reason, rejections by reason. */
export interface ServerCounters {
  finishedByReason: Record<string, number>;
  rejectedByReason: Record<string, number>;
}

export function serverCounters(samples: MetricSamples): ServerCounters {
  return {
    finishedByReason: sumByLabel(samples, 'dropserve:request_success_total', 'finished_reason', {
      transport: 'http',
    }),
    rejectedByReason: sumByLabel(samples, 'dropserve:request_rejected_total', 'reason', {
      transport: 'http',
    }),
  };
}

/** after − before per key (keys of either side; a counter that appeared counts from 0). */
export function counterDelta(
  before: Record<string, number>,
  after: Record<string, number>,
): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    delta[key] = (after[key] ?? 0) - (before[key] ?? 0);
  }
  return delta;
}

/** One scrape of GET /metrics, or null when it does not answer 200 in time. */
export async function scrapeMetrics(
  baseUrl: string,
  apiKey?: string,
  timeoutMs = 5000,
): Promise<MetricSamples | null> {
  const text = await getTextOrNull(baseUrl, '/metrics', apiKey, timeoutMs);
  return text === null ? null : parsePrometheusText(text);
}

/** VmRSS from /proc/PID/status (kB) and the entries of /proc/PID/fd. Throws if the process is gone. */
export async function readProcResources(pid: number): Promise<ResourceReading> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rss = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  const fds = await readdir(`/proc/${pid}/fd`);
  return { rssBytes: rss ? Number(rss[1]) * 1024 : null, openFds: fds.length };
}

export type ResourceSource =
  | { kind: 'metrics'; baseUrl: string; apiKey?: string }
  | { kind: 'proc'; pid: number };

export function describeSource(source: ResourceSource): string {
  return source.kind === 'proc'
    ? `/proc/${source.pid} (VmRSS, fd entries)`
    : 'server /metrics (process_resident_memory_bytes, process_open_fds)';
}

/** One reading from the source; a failed read gives nulls (the sample still records the load). */
export async function readResources(source: ResourceSource): Promise<ResourceReading> {
  if (source.kind === 'proc') {
    try {
      return await readProcResources(source.pid);
    } catch {
      return { rssBytes: null, openFds: null };
    }
  }
  const samples = await scrapeMetrics(source.baseUrl, source.apiKey);
  return samples ? processResources(samples) : { rssBytes: null, openFds: null };
}
