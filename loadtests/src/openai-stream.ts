import { performance } from 'node:perf_hooks';
import { type Dispatcher, request } from 'undici';
import { SseParser } from './sse-parser.ts';

/**
 * One streaming OpenAI request, timed on the client. This module only talks HTTP and records when
 * things arrived; what the times mean (TTFT, ITL, TPOT) is defined in metrics.ts.
 */

export type Endpoint = 'completions' | 'chat';

export interface ChatMessage {
  role: string;
  content: string;
}

/** What to send: a completions prompt or chat messages, and the output budget. */
export interface PromptSpec {
  prompt?: string;
  messages?: ChatMessage[];
  maxTokens: number;
  /** OpenAI `stop` strings (a dataset line's). */
  stop?: string | string[];
  /** OpenAI `user`: dropserve assigns A/B experiment arms by hashing it. */
  user?: string;
}

export interface StreamTarget {
  /** Server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted too). */
  baseUrl: string;
  model: string;
  apiKey?: string;
  endpoint: Endpoint;
  /** vLLM extension: keep generating past EOS so the output length is exactly max_tokens. */
  ignoreEos: boolean;
  temperature: number;
  timeoutMs: number;
  /** Extra top-level body fields (e.g. `user` for A/B assignment). */
  extraBody?: Record<string, unknown>;
  dispatcher?: Dispatcher;
}

/** Client-side timeline of one request; times are performance.now() milliseconds. */
export interface StreamResult {
  isOk: boolean;
  /** HTTP status; null when no response arrived. */
  status: number | null;
  /** Stable failure class: http_<status>, timeout, aborted, connection, stream_error, ... */
  errorKind?: string;
  errorMessage?: string;
  sentAtMs: number;
  /** Arrival of every chunk that carried generated text, in order. */
  contentAtMs: number[];
  /** Arrival of the last chunk carrying choices (text or finish_reason), vLLM's end of latency. */
  lastChoiceAtMs: number | null;
  endedAtMs: number;
  promptTokens: number | null;
  completionTokens: number | null;
  finishReason: string | null;
  textLength: number;
}

export function endpointPath(endpoint: Endpoint): string {
  return endpoint === 'chat' ? '/v1/chat/completions' : '/v1/completions';
}

/** Joins a base URL and an API path, accepting bases given with or without a trailing /v1. */
export function apiUrl(baseUrl: string, path: string): string {
  const base = baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '');
  return base + path;
}

export function buildRequestBody(target: StreamTarget, spec: PromptSpec): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: target.model,
    max_tokens: spec.maxTokens,
    temperature: target.temperature,
    stream: true,
    stream_options: { include_usage: true },
    ...target.extraBody,
  };
  if (target.endpoint === 'chat') {
    body.messages = spec.messages ?? [{ role: 'user', content: spec.prompt ?? '' }];
  } else {
    if (spec.prompt === undefined) {
      throw new TypeError(
        'a chat-only prompt (messages) cannot be sent to /v1/completions; use --endpoint chat',
      );
    }
    body.prompt = spec.prompt;
  }
  if (target.ignoreEos) body.ignore_eos = true;
  if (spec.user !== undefined) body.user = spec.user;
  if (spec.stop !== undefined) body.stop = spec.stop;
  return body;
}

const MAX_ERROR_BODY_CHARS = 2000;

export async function sendStreamingRequest(
  target: StreamTarget,
  spec: PromptSpec,
  signal?: AbortSignal,
): Promise<StreamResult> {
  const payload = JSON.stringify(buildRequestBody(target, spec));
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'text/event-stream',
  };
  if (target.apiKey) headers.authorization = `Bearer ${target.apiKey}`;
  // One controller per request, tied to the run's signal by a listener removed in `finally`:
  // AbortSignal.any over a long-lived signal keeps every request's signal alive on Node 20.
  const controller = new AbortController();
  let isTimedOut = false;
  const timer = setTimeout(() => {
    isTimedOut = true;
    controller.abort();
  }, target.timeoutMs);
  const onRunAbort = (): void => controller.abort();
  signal?.addEventListener('abort', onRunAbort, { once: true });
  if (signal?.aborted) controller.abort();

  const result: StreamResult = {
    isOk: false,
    status: null,
    sentAtMs: performance.now(),
    contentAtMs: [],
    lastChoiceAtMs: null,
    endedAtMs: 0,
    promptTokens: null,
    completionTokens: null,
    finishReason: null,
    textLength: 0,
  };
  let response: Dispatcher.ResponseData | undefined;
  try {
    response = await request(apiUrl(target.baseUrl, endpointPath(target.endpoint)), {
      method: 'POST',
      headers,
      body: payload,
      signal: controller.signal,
      dispatcher: target.dispatcher,
      headersTimeout: target.timeoutMs,
      bodyTimeout: target.timeoutMs,
    });
    result.status = response.statusCode;
    if (response.statusCode !== 200) {
      const text = await response.body.text();
      return finish(result, `http_${response.statusCode}`, errorMessageFromBody(text));
    }
    const stream = new StreamReader(target.endpoint, result);
    for await (const bytes of response.body as AsyncIterable<Buffer>) {
      stream.onEvents(stream.parser.push(bytes), performance.now());
      if (stream.failure) break;
    }
    if (!stream.failure) stream.onEvents(stream.parser.end(), performance.now());
    if (stream.failure) {
      response.body.destroy();
      return finish(result, stream.failure.kind, stream.failure.message);
    }
    if (!stream.isDone) return finish(result, 'incomplete_stream', 'stream ended without data: [DONE]');
    if (result.contentAtMs.length === 0) {
      return finish(result, 'empty_output', 'no chunk carried generated text, so TTFT is undefined');
    }
    result.isOk = true;
    result.endedAtMs = performance.now();
    return result;
  } catch (error) {
    response?.body.destroy();
    const { kind, message } = classifyThrown(error, isTimedOut, target.timeoutMs);
    return finish(result, kind, message);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onRunAbort);
  }
}

function finish(result: StreamResult, kind: string, message: string): StreamResult {
  result.isOk = false;
  result.errorKind = kind;
  result.errorMessage = message;
  result.endedAtMs = performance.now();
  return result;
}

/** Applies parsed SSE events to a result; the first protocol problem stops the request. */
class StreamReader {
  readonly parser = new SseParser();
  isDone = false;
  failure: { kind: string; message: string } | undefined;
  readonly #endpoint: Endpoint;
  readonly #result: StreamResult;

  constructor(endpoint: Endpoint, result: StreamResult) {
    this.#endpoint = endpoint;
    this.#result = result;
  }

  onEvents(events: readonly { type: string; data: string }[], atMs: number): void {
    for (const event of events) {
      if (this.failure || this.isDone) return;
      if (event.data === '[DONE]') {
        this.isDone = true;
        return;
      }
      let chunk: unknown;
      try {
        chunk = JSON.parse(event.data);
      } catch {
        this.failure = { kind: 'bad_chunk', message: `unparseable SSE data: ${event.data.slice(0, 200)}` };
        return;
      }
      if (event.type === 'error' || hasErrorField(chunk)) {
        this.failure = { kind: 'stream_error', message: errorMessageFromBody(event.data) };
        return;
      }
      this.#applyChunk(chunk, atMs);
    }
  }

  #applyChunk(chunk: unknown, atMs: number): void {
    if (!isRecord(chunk)) return;
    const usage = chunk.usage;
    if (isRecord(usage)) {
      if (typeof usage.prompt_tokens === 'number') this.#result.promptTokens = usage.prompt_tokens;
      if (typeof usage.completion_tokens === 'number')
        this.#result.completionTokens = usage.completion_tokens;
    }
    const choices = chunk.choices;
    if (!Array.isArray(choices) || choices.length === 0 || !isRecord(choices[0])) return;
    const choice = choices[0];
    const text = this.#endpoint === 'chat' ? chatDeltaText(choice.delta) : choice.text;
    if (typeof text === 'string' && text.length > 0) {
      this.#result.contentAtMs.push(atMs);
      this.#result.textLength += text.length;
    }
    if (typeof choice.finish_reason === 'string') this.#result.finishReason = choice.finish_reason;
    this.#result.lastChoiceAtMs = atMs;
  }
}

function chatDeltaText(delta: unknown): unknown {
  if (!isRecord(delta)) return undefined;
  // Reasoning models stream thoughts separately; they are generated tokens all the same.
  return delta.content || delta.reasoning_content;
}

function hasErrorField(chunk: unknown): boolean {
  return isRecord(chunk) && chunk.error !== undefined && chunk.error !== null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The message of an OpenAI-shaped error body, else the body itself (truncated). */
export function errorMessageFromBody(text: string): string {
  try {
    const parsed: unknown = JSON.parse(text);
    if (isRecord(parsed)) {
      const error = parsed.error;
      if (isRecord(error) && typeof error.message === 'string') return error.message;
      if (typeof error === 'string') return error;
      if (typeof parsed.message === 'string') return parsed.message;
    }
  } catch {
    // not JSON: fall through to the raw text
  }
  return text.slice(0, MAX_ERROR_BODY_CHARS);
}

function classifyThrown(
  error: unknown,
  isTimedOut: boolean,
  timeoutMs: number,
): { kind: string; message: string } {
  if (isTimedOut) return { kind: 'timeout', message: `no complete response within ${timeoutMs} ms` };
  const err = error as { name?: string; code?: string; message?: string; cause?: { code?: string } };
  if (err?.name === 'AbortError') return { kind: 'aborted', message: 'request aborted' };
  const code = err?.code ?? err?.cause?.code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return { kind: 'timeout', message: `${code}: ${err.message ?? ''}` };
  }
  const message = err?.message ?? String(error);
  return { kind: 'connection', message: code ? `${code}: ${message}` : message };
}
