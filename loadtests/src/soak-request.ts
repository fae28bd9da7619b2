import { performance } from 'node:perf_hooks';
import { type Dispatcher, request } from 'undici';
import { apiUrl, buildRequestBody, endpointPath } from './openai-stream.ts';
import { checkCompletionBody, type Problem, parseErrorBody, StreamChecker } from './soak-check.ts';
import type { AbortKind, SoakRequestPlan } from './soak-plan.ts';
import { SseParser } from './sse-parser.ts';

/**
 * Sends one soak request, cuts it off where its plan says, and classifies how it ended. Every
 * request gets exactly one outcome; only the error kinds count as failures of the server.
 */

export type OutcomeKind =
  | 'ok'
  /** Cut off by the client as planned. */
  | 'aborted'
  /** Cancelled because the run was interrupted (Ctrl-C): neither a success nor a server failure. */
  | 'interrupted'
  | 'http_error'
  /** An error event inside a 200 stream. */
  | 'stream_error'
  | 'protocol_error'
  /** Connection refused or reset, or no complete answer within the timeout. */
  | 'network_error';

export const ERROR_OUTCOMES: ReadonlySet<OutcomeKind> = new Set([
  'http_error',
  'stream_error',
  'protocol_error',
  'network_error',
]);

export const isErrorOutcome = (kind: OutcomeKind): boolean => ERROR_OUTCOMES.has(kind);

export interface SoakOutcome {
  index: number;
  model: string;
  endpoint: SoakRequestPlan['endpoint'];
  isStreaming: boolean;
  kind: OutcomeKind;
  /**
   * What kind of aborted / error it was: the abort point; "http_503 server_overloaded"; the
   * protocol problem ("missing_done", "usage_mismatch", …); "timeout" or the socket error code.
   */
  detail?: string;
  message?: string;
  status: number | null;
  /** The planned abort point, whether or not the request reached it. */
  plannedAbort: AbortKind | null;
  /** An abort was planned but the request finished first (it counts as ok). */
  isAbortMissed: boolean;
  /** From usage, for ok requests. */
  completionTokens: number;
  startedAtMs: number;
  durationMs: number;
}

export interface SoakTarget {
  baseUrl: string;
  apiKey?: string;
  timeoutMs: number;
  temperature: number;
  dispatcher?: Dispatcher;
}

/** Why the client cut a request off; the first cause wins. */
type CutCause = 'planned' | 'timeout' | 'interrupted';

/** How a request ended, before it becomes an outcome (the pure part of the classification). */
export type Ending =
  | { type: 'complete'; problem: Problem | null; completionTokens: number }
  | { type: 'http_status'; status: number; body: string }
  | { type: 'cut'; cause: CutCause }
  | { type: 'thrown'; error: unknown };

export interface Classification {
  kind: OutcomeKind;
  detail?: string;
  message?: string;
  completionTokens: number;
  isAbortMissed: boolean;
}

/**
 * The outcome of an ending. A request that completed is judged on its answer alone, even if an
 * abort was planned: it simply finished first. A request cut off as planned is aborted, whatever
 * error the cut surfaced as.
 */
export function classifyEnding(ending: Ending, plannedAbort: AbortKind | null): Classification {
  const base = { completionTokens: 0, isAbortMissed: false };
  switch (ending.type) {
    case 'complete':
      if (ending.problem) {
        return {
          ...base,
          kind: ending.problem.kind,
          detail: ending.problem.key,
          message: ending.problem.message,
        };
      }
      return { kind: 'ok', completionTokens: ending.completionTokens, isAbortMissed: plannedAbort !== null };
    case 'http_status': {
      const { code, message } = parseErrorBody(ending.body);
      return { ...base, kind: 'http_error', detail: `http_${ending.status} ${code}`, message };
    }
    case 'cut':
      if (ending.cause === 'planned') return { ...base, kind: 'aborted', detail: plannedAbort ?? undefined };
      if (ending.cause === 'interrupted') return { ...base, kind: 'interrupted' };
      return {
        ...base,
        kind: 'network_error',
        detail: 'timeout',
        message: 'no complete answer within the timeout',
      };
    case 'thrown': {
      const err = ending.error as { code?: string; message?: string; cause?: { code?: string } } | undefined;
      const code = err?.code ?? err?.cause?.code ?? 'connection';
      const isTimeout = code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
      return {
        ...base,
        kind: 'network_error',
        detail: isTimeout ? 'timeout' : code,
        message: err?.message ?? String(ending.error),
      };
    }
  }
}

export async function sendSoakRequest(
  target: SoakTarget,
  plan: SoakRequestPlan,
  runSignal?: AbortSignal,
): Promise<SoakOutcome> {
  const startedAtMs = performance.now();
  const ending = await perform(target, plan, runSignal);
  const classification = classifyEnding(ending, plan.abort?.kind ?? null);
  const outcome: SoakOutcome = {
    index: plan.index,
    model: plan.model,
    endpoint: plan.endpoint,
    isStreaming: plan.isStreaming,
    kind: classification.kind,
    status: ending.type === 'http_status' ? ending.status : ending.type === 'complete' ? 200 : null,
    plannedAbort: plan.abort?.kind ?? null,
    isAbortMissed: classification.isAbortMissed,
    completionTokens: classification.completionTokens,
    startedAtMs,
    durationMs: performance.now() - startedAtMs,
  };
  if (classification.detail !== undefined) outcome.detail = classification.detail;
  if (classification.message !== undefined) outcome.message = classification.message;
  return outcome;
}

async function perform(target: SoakTarget, plan: SoakRequestPlan, runSignal?: AbortSignal): Promise<Ending> {
  const body = buildRequestBody(
    {
      baseUrl: target.baseUrl,
      model: plan.model,
      endpoint: plan.endpoint,
      ignoreEos: false,
      temperature: target.temperature,
      timeoutMs: target.timeoutMs,
    },
    plan.spec,
  );
  if (!plan.isStreaming) {
    body.stream = false;
    delete body.stream_options;
  }
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (plan.isStreaming) headers.accept = 'text/event-stream';
  if (target.apiKey) headers.authorization = `Bearer ${target.apiKey}`;

  const controller = new AbortController();
  let cutCause: CutCause | null = null;
  const cut = (cause: CutCause): void => {
    cutCause ??= cause;
    controller.abort();
  };
  const timeout = setTimeout(() => cut('timeout'), target.timeoutMs);
  const onRunAbort = (): void => cut('interrupted');
  runSignal?.addEventListener('abort', onRunAbort, { once: true });
  if (runSignal?.aborted) cut('interrupted');
  const abort = plan.abort;
  const beforeResponse =
    abort?.kind === 'before-response' ? setTimeout(() => cut('planned'), abort.delayMs) : undefined;

  let response: Dispatcher.ResponseData | undefined;
  try {
    response = await request(apiUrl(target.baseUrl, endpointPath(plan.endpoint)), {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      signal: controller.signal,
      dispatcher: target.dispatcher,
    });
    clearTimeout(beforeResponse);
    if (response.statusCode !== 200) {
      return { type: 'http_status', status: response.statusCode, body: await response.body.text() };
    }
    if (!plan.isStreaming) {
      const result = checkCompletionBody(
        plan.endpoint,
        plan.model,
        plan.spec.maxTokens,
        await response.body.text(),
      );
      return { type: 'complete', problem: result.problem, completionTokens: result.completionTokens };
    }
    const checker = new StreamChecker(plan.endpoint, plan.model, plan.spec.maxTokens);
    const cutAfterChunks =
      abort?.kind === 'after-first-token' ? 1 : abort?.kind === 'mid-stream' ? abort.afterChunks : null;
    const parser = new SseParser();
    for await (const bytes of response.body as AsyncIterable<Buffer>) {
      for (const event of parser.push(bytes)) {
        if (!checker.onEvent(event)) break;
        if (cutAfterChunks !== null && checker.textChunks >= cutAfterChunks && !checker.isDone) {
          cut('planned');
          response.body.destroy();
          return { type: 'cut', cause: 'planned' };
        }
      }
      if (checker.problem) break;
    }
    if (!checker.problem) for (const event of parser.end()) checker.onEvent(event);
    if (checker.problem) response.body.destroy();
    return {
      type: 'complete',
      problem: checker.end(),
      completionTokens: checker.usage?.completionTokens ?? 0,
    };
  } catch (error) {
    response?.body.destroy();
    return cutCause === null ? { type: 'thrown', error } : { type: 'cut', cause: cutCause };
  } finally {
    clearTimeout(timeout);
    clearTimeout(beforeResponse);
    runSignal?.removeEventListener('abort', onRunAbort);
  }
}
