import type { StreamResult } from './openai-stream.ts';
import { hasSlo, meetsSlo, type Slo } from './slo.ts';
import { type DistributionStats, describe } from './stats.ts';

/**
 * Request and run metrics with vLLM `bench serve` definitions:
 *   TTFT = first generated-text chunk − send
 *   ITL  = every gap between consecutive generated-text chunks (a distribution over chunks)
 *   TPOT = (E2E − TTFT) / (output_tokens − 1), only for requests with > 1 output token
 *   E2E  = last chunk carrying choices − send
 * Throughputs divide by the benchmark duration (first send to last finish); goodput counts only
 * requests meeting every SLO. Output tokens come from the server's `usage`, else one per chunk.
 */

export interface RequestRecord {
  /** Order of issue within the measured phase. */
  index: number;
  isOk: boolean;
  status: number | null;
  errorKind?: string;
  errorMessage?: string;
  /** Send time, ms after the measured phase began. */
  startMs: number;
  ttftMs: number | null;
  tpotMs: number | null;
  e2eMs: number | null;
  itlMs: number[];
  promptTokens: number | null;
  outputTokens: number;
  outputTokensSource: 'usage' | 'chunks';
  maxTokens: number;
  finishReason: string | null;
  meetsSlo: boolean | null;
}

export function toRequestRecord(
  index: number,
  result: StreamResult,
  phaseStartMs: number,
  maxTokens: number,
  slo: Slo,
): RequestRecord {
  const contentAt = result.contentAtMs;
  const hasUsage = result.completionTokens !== null;
  const outputTokens = result.completionTokens ?? contentAt.length;
  const record: RequestRecord = {
    index,
    isOk: result.isOk,
    status: result.status,
    startMs: result.sentAtMs - phaseStartMs,
    ttftMs: null,
    tpotMs: null,
    e2eMs: null,
    itlMs: [],
    promptTokens: result.promptTokens,
    outputTokens: result.isOk ? outputTokens : 0,
    outputTokensSource: hasUsage ? 'usage' : 'chunks',
    maxTokens,
    finishReason: result.finishReason,
    meetsSlo: null,
  };
  if (!result.isOk) {
    record.errorKind = result.errorKind;
    record.errorMessage = result.errorMessage;
    record.e2eMs = result.endedAtMs - result.sentAtMs;
    return record;
  }
  const ttftMs = contentAt[0]! - result.sentAtMs;
  const e2eMs = (result.lastChoiceAtMs ?? contentAt[contentAt.length - 1]!) - result.sentAtMs;
  record.ttftMs = ttftMs;
  record.e2eMs = e2eMs;
  for (let i = 1; i < contentAt.length; i++) record.itlMs.push(contentAt[i]! - contentAt[i - 1]!);
  if (outputTokens > 1) record.tpotMs = (e2eMs - ttftMs) / (outputTokens - 1);
  if (hasSlo(slo)) record.meetsSlo = meetsSlo(slo, { ttftMs, tpotMs: record.tpotMs, e2eMs });
  return record;
}

export interface LoadtestSummary {
  completed: number;
  failed: number;
  /** Failures by kind: http_429, timeout, connection, stream_error, incomplete_stream, ... */
  errorsByKind: Record<string, number>;
  durationS: number;
  /** Sum of server-reported prompt tokens (requests without usage add nothing). */
  totalInputTokens: number;
  totalOutputTokens: number;
  requestThroughput: number;
  outputThroughput: number;
  totalTokenThroughput: number;
  /** Requests per second meeting every SLO; null without an SLO. */
  goodput: number | null;
  goodRequests: number | null;
  ttftMs: DistributionStats;
  tpotMs: DistributionStats;
  itlMs: DistributionStats;
  e2eMs: DistributionStats;
  /** Most requests in flight at once, seen from the client. */
  maxConcurrency: number;
  /** Requests whose output-token count came from counting chunks (no usage in the stream). */
  outputTokensFromChunks: number;
}

export function summarize(
  records: readonly RequestRecord[],
  durationMs: number,
  slo: Slo,
  maxConcurrency: number,
): LoadtestSummary {
  const ok = records.filter((r) => r.isOk);
  const errorsByKind: Record<string, number> = {};
  for (const r of records) {
    if (!r.isOk) {
      const kind = r.errorKind ?? 'unknown';
      errorsByKind[kind] = (errorsByKind[kind] ?? 0) + 1;
    }
  }
  const totalInputTokens = ok.reduce((sum, r) => sum + (r.promptTokens ?? 0), 0);
  const totalOutputTokens = ok.reduce((sum, r) => sum + r.outputTokens, 0);
  const durationS = durationMs / 1000;
  const perSecond = (n: number): number => (durationS > 0 ? n / durationS : 0);
  const goodRequests = hasSlo(slo) ? ok.filter((r) => r.meetsSlo === true).length : null;
  return {
    completed: ok.length,
    failed: records.length - ok.length,
    errorsByKind,
    durationS,
    totalInputTokens,
    totalOutputTokens,
    requestThroughput: perSecond(ok.length),
    outputThroughput: perSecond(totalOutputTokens),
    totalTokenThroughput: perSecond(totalInputTokens + totalOutputTokens),
    goodput: goodRequests === null ? null : perSecond(goodRequests),
    goodRequests,
    ttftMs: describe(ok.map((r) => r.ttftMs!)),
    tpotMs: describe(ok.filter((r) => r.tpotMs !== null).map((r) => r.tpotMs!)),
    itlMs: describe(ok.flatMap((r) => r.itlMs)),
    e2eMs: describe(ok.map((r) => r.e2eMs!)),
    maxConcurrency,
    outputTokensFromChunks: ok.filter((r) => r.outputTokensSource === 'chunks').length,
  };
}
