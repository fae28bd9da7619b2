import { DropserveError } from '../../engine/errors.ts';

/** Latency service-level objectives in milliseconds; an absent field is not checked. */
export interface Slo {
  ttftMs?: number;
  tpotMs?: number;
  e2eMs?: number;
}

export type SloMetric = keyof Slo;

export const SLO_METRICS: readonly SloMetric[] = ['ttftMs', 'tpotMs', 'e2eMs'];

const KEY_ALIASES: Record<string, SloMetric> = {
  ttft_ms: 'ttftMs',
  ttft: 'ttftMs',
  tpot_ms: 'tpotMs',
  tpot: 'tpotMs',
  e2e_ms: 'e2eMs',
  e2e: 'e2eMs',
  e2el: 'e2eMs', // vLLM's --goodput spelling
  e2el_ms: 'e2eMs',
};

const LABELS: Record<SloMetric, string> = { ttftMs: 'TTFT', tpotMs: 'TPOT', e2eMs: 'E2E' };

export function sloMetricLabel(metric: SloMetric): string {
  return LABELS[metric];
}

/** Parses `ttft_ms:500,tpot_ms:50,e2e_ms:8000` (values in ms; vLLM's `ttft:500` spelling works too). */
export function parseSlo(text: string): Slo {
  const slo: Slo = {};
  for (const part of text.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    const [rawKey, rawValue, ...rest] = item.split(':');
    const key = KEY_ALIASES[(rawKey ?? '').trim().toLowerCase()];
    const value = Number(rawValue);
    if (!key || rest.length > 0 || rawValue === undefined) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--slo: expected items like ttft_ms:500,tpot_ms:50,e2e_ms:8000, found '${item}'`,
        { param: 'slo' },
      );
    }
    if (!(value > 0) || !Number.isFinite(value)) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--slo: ${rawKey} must be a positive number of ms, found '${rawValue}'`,
        {
          param: 'slo',
        },
      );
    }
    slo[key] = value;
  }
  return slo;
}

export function hasSlo(slo: Slo): boolean {
  return SLO_METRICS.some((m) => slo[m] !== undefined);
}

/** "TTFT ≤ 500 ms, TPOT ≤ 50 ms", optionally prefixed by a percentile ("p99 TTFT ≤ 500 ms"). */
export function formatSlo(slo: Slo, percentile?: number): string {
  const prefix = percentile === undefined ? '' : `p${percentile} `;
  const parts = SLO_METRICS.filter((m) => slo[m] !== undefined).map(
    (m) => `${prefix}${LABELS[m]} ≤ ${slo[m]} ms`,
  );
  return parts.length === 0 ? 'no SLO' : parts.join(', ');
}

/** Per-request latencies an SLO is checked against. */
export interface RequestLatencies {
  ttftMs: number;
  /** null when the request produced ≤ 1 token: vLLM counts its TPOT as 0 for goodput. */
  tpotMs: number | null;
  e2eMs: number;
}

export function meetsSlo(slo: Slo, latencies: RequestLatencies): boolean {
  if (slo.ttftMs !== undefined && latencies.ttftMs > slo.ttftMs) return false;
  if (slo.tpotMs !== undefined && (latencies.tpotMs ?? 0) > slo.tpotMs) return false;
  if (slo.e2eMs !== undefined && latencies.e2eMs > slo.e2eMs) return false;
  return true;
}
