import type { Endpoint } from './openai-stream.ts';
import type { SseEvent } from './sse-parser.ts';

/**
 * What a well-formed OpenAI answer looks like, checked on every soak request: the response body of a
 * non-streaming request, or the events of a stream. A problem is a short stable key (it groups
 * errors in the report) and a message with the evidence.
 */

export interface Problem {
  /** protocol_error: the answer breaks the API shape; stream_error: the server sent an error event. */
  kind: 'protocol_error' | 'stream_error';
  key: string;
  message: string;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number | null;
}

const FINISH_REASONS = new Set(['stop', 'length']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function protocol(key: string, message: string): Problem {
  return { kind: 'protocol_error', key, message };
}

export function parseUsage(value: unknown): Usage | null {
  if (!isRecord(value)) return null;
  const { prompt_tokens: prompt, completion_tokens: completion, total_tokens: total } = value;
  if (typeof prompt !== 'number' || typeof completion !== 'number') return null;
  return {
    promptTokens: prompt,
    completionTokens: completion,
    totalTokens: typeof total === 'number' ? total : null,
  };
}

/**
 * Usage must add up and agree with what was generated: no more tokens than max_tokens, exactly
 * max_tokens when the finish reason is "length", and at least one token per text chunk streamed.
 */
export function checkUsage(
  usage: Usage,
  expected: { maxTokens: number; finishReason: string; textChunks?: number },
): Problem | null {
  const { promptTokens, completionTokens, totalTokens } = usage;
  const show = `prompt ${promptTokens}, completion ${completionTokens}, total ${totalTokens}`;
  if (!Number.isInteger(promptTokens) || promptTokens < 1 || !Number.isInteger(completionTokens)) {
    return protocol('usage_mismatch', `implausible usage (${show})`);
  }
  if (totalTokens !== null && totalTokens !== promptTokens + completionTokens) {
    return protocol('usage_mismatch', `total_tokens is not prompt + completion (${show})`);
  }
  if (completionTokens < 0 || completionTokens > expected.maxTokens) {
    return protocol(
      'usage_mismatch',
      `completion_tokens outside [0, max_tokens ${expected.maxTokens}] (${show})`,
    );
  }
  if (expected.finishReason === 'length' && completionTokens !== expected.maxTokens) {
    return protocol(
      'usage_mismatch',
      `finish_reason "length" but completion_tokens ${completionTokens} != max_tokens ${expected.maxTokens}`,
    );
  }
  if (expected.textChunks !== undefined && expected.textChunks > completionTokens) {
    return protocol(
      'usage_mismatch',
      `${expected.textChunks} text chunks streamed but completion_tokens is ${completionTokens}`,
    );
  }
  return null;
}

/** `{"error": {"code", "message"}}` of an error response or error event; code is "-" when missing. */
export function parseErrorBody(text: string): { code: string; message: string } {
  try {
    const parsed: unknown = JSON.parse(text);
    if (isRecord(parsed) && isRecord(parsed.error)) {
      const { code, type, message } = parsed.error;
      return {
        code:
          (typeof code === 'string' && code !== '') || typeof code === 'number'
            ? String(code)
            : typeof type === 'string'
              ? type
              : '-',
        message: typeof message === 'string' ? message : text.slice(0, 300),
      };
    }
  } catch {
    // not JSON: reported as it is
  }
  return { code: '-', message: `not an OpenAI error body: ${text.slice(0, 300)}` };
}

export interface CompletionResult {
  problem: Problem | null;
  completionTokens: number;
  finishReason: string | null;
}

/** A non-streaming /v1/completions or /v1/chat/completions response body. */
export function checkCompletionBody(
  endpoint: Endpoint,
  model: string,
  maxTokens: number,
  text: string,
): CompletionResult {
  const fail = (key: string, message: string): CompletionResult => ({
    problem: protocol(key, message),
    completionTokens: 0,
    finishReason: null,
  });
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return fail('bad_json', `response is not JSON: ${text.slice(0, 200)}`);
  }
  if (!isRecord(body)) return fail('bad_shape', 'response is not a JSON object');
  const object = endpoint === 'chat' ? 'chat.completion' : 'text_completion';
  if (body.object !== object)
    return fail('bad_shape', `object is ${JSON.stringify(body.object)}, not "${object}"`);
  if (body.model !== model)
    return fail('wrong_model', `asked for ${model}, answered as ${String(body.model)}`);
  const choice = Array.isArray(body.choices) ? body.choices[0] : undefined;
  if (!isRecord(choice)) return fail('bad_shape', 'no choices[0]');
  const content =
    endpoint === 'chat' ? (isRecord(choice.message) ? choice.message.content : undefined) : choice.text;
  if (typeof content !== 'string') return fail('bad_shape', 'choices[0] carries no text');
  const finishReason = choice.finish_reason;
  if (typeof finishReason !== 'string' || !FINISH_REASONS.has(finishReason)) {
    return fail('bad_finish_reason', `finish_reason ${JSON.stringify(finishReason)}`);
  }
  const usage = parseUsage(body.usage);
  if (!usage) return fail('missing_usage', 'no usage object');
  return {
    problem: checkUsage(usage, { maxTokens, finishReason }),
    completionTokens: usage.completionTokens,
    finishReason,
  };
}

/**
 * Follows a stream event by event. After the last event call end(): it reports what was missing
 * (the [DONE] sentinel, a finish reason, the usage chunk asked for with include_usage).
 */
export class StreamChecker {
  /** Chunks that carried generated text. */
  textChunks = 0;
  isDone = false;
  finishReason: string | null = null;
  usage: Usage | null = null;
  problem: Problem | null = null;
  readonly #endpoint: Endpoint;
  readonly #model: string;
  readonly #maxTokens: number;

  constructor(endpoint: Endpoint, model: string, maxTokens: number) {
    this.#endpoint = endpoint;
    this.#model = model;
    this.#maxTokens = maxTokens;
  }

  /** Applies one event; returns false once the stream has a problem (stop reading then). */
  onEvent(event: SseEvent): boolean {
    if (this.problem) return false;
    if (this.isDone) {
      this.problem = protocol('data_after_done', `event after [DONE]: ${event.data.slice(0, 200)}`);
      return false;
    }
    if (event.data === '[DONE]') {
      this.isDone = true;
      return true;
    }
    let chunk: unknown;
    try {
      chunk = JSON.parse(event.data);
    } catch {
      this.problem = protocol('bad_chunk', `unparseable SSE data: ${event.data.slice(0, 200)}`);
      return false;
    }
    if (event.type === 'error' || (isRecord(chunk) && chunk.error !== undefined && chunk.error !== null)) {
      const { code, message } = parseErrorBody(event.data);
      this.problem = { kind: 'stream_error', key: code, message };
      return false;
    }
    this.#applyChunk(chunk);
    return this.problem === null;
  }

  #applyChunk(chunk: unknown): void {
    const object = this.#endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    if (!isRecord(chunk) || chunk.object !== object) {
      this.problem = protocol(
        'bad_chunk',
        `chunk is not a ${object}: ${JSON.stringify(chunk).slice(0, 200)}`,
      );
      return;
    }
    if (chunk.model !== this.#model) {
      this.problem = protocol('wrong_model', `asked for ${this.#model}, chunk says ${String(chunk.model)}`);
      return;
    }
    if (chunk.usage !== undefined && chunk.usage !== null) {
      this.usage = parseUsage(chunk.usage);
      if (!this.usage)
        this.problem = protocol('bad_chunk', `malformed usage: ${JSON.stringify(chunk.usage)}`);
    }
    const choice = Array.isArray(chunk.choices) ? chunk.choices[0] : undefined;
    if (!isRecord(choice)) return;
    const text =
      this.#endpoint === 'chat' ? (isRecord(choice.delta) ? choice.delta.content : undefined) : choice.text;
    if (typeof text === 'string' && text.length > 0) {
      if (this.finishReason !== null) {
        this.problem = protocol('text_after_finish', 'a text chunk came after the finish_reason chunk');
        return;
      }
      this.textChunks++;
    }
    if (typeof choice.finish_reason === 'string') this.finishReason = choice.finish_reason;
  }

  /** The stream has ended: the problem it had, or what it lacked. */
  end(): Problem | null {
    if (this.problem) return this.problem;
    if (!this.isDone) return protocol('missing_done', 'stream ended without data: [DONE]');
    if (this.finishReason === null)
      return protocol('missing_finish_reason', 'no chunk carried a finish_reason');
    if (!FINISH_REASONS.has(this.finishReason)) {
      return protocol('bad_finish_reason', `finish_reason ${JSON.stringify(this.finishReason)}`);
    }
    if (!this.usage) return protocol('missing_usage', 'no usage chunk despite stream_options.include_usage');
    return checkUsage(this.usage, {
      maxTokens: this.#maxTokens,
      finishReason: this.finishReason,
      textChunks: this.textChunks,
    });
  }
}
