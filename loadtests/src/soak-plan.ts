import { SeededRandom } from '../../engine/model/random.ts';
import { randomWords } from './dataset.ts';
import type { Endpoint, PromptSpec } from './openai-stream.ts';

/**
 * What each soak request does, drawn from one seeded stream in issue order, so request i of a run
 * is the same request in every run with the same seed (only its timing differs).
 */

/**
 * Where a request is cut off by the client:
 *  - before-response: a short random delay after sending, unless response headers came first (for a
 *    non-streaming request headers come with the whole answer, so this cuts it mid-generation);
 *  - after-first-token: as soon as the first chunk carrying text arrives (streaming only);
 *  - mid-stream: after `afterChunks` text chunks (streaming only).
 * A request that finishes before its abort point is a normal, successful request.
 */
export type AbortPoint =
  | { kind: 'before-response'; delayMs: number }
  | { kind: 'after-first-token' }
  | { kind: 'mid-stream'; afterChunks: number };

export type AbortKind = AbortPoint['kind'];
export const ABORT_KINDS: readonly AbortKind[] = ['before-response', 'after-first-token', 'mid-stream'];

export interface SoakRequestPlan {
  index: number;
  model: string;
  endpoint: Endpoint;
  isStreaming: boolean;
  spec: PromptSpec;
  abort: AbortPoint | null;
}

export interface SoakMix {
  /** Served model ids to spread requests over (the full model and its variants). */
  models: readonly string[];
  /** Share of requests sent with stream: true. */
  streamShare: number;
  /** Share sent to /v1/chat/completions; the rest go to /v1/completions. */
  chatShare: number;
  /** Share the client aborts at a random point. */
  abortShare: number;
  /** Prompt length in words (about one token each in Llama vocabularies). */
  promptWords: number;
  /** max_tokens is uniform in [min, max]. */
  maxTokens: { min: number; max: number };
}

/** Longest wait before a before-response abort: long enough that some land mid-generation. */
export const BEFORE_RESPONSE_MAX_DELAY_MS = 100;

export function validateMix(mix: SoakMix): void {
  if (mix.models.length === 0) throw new RangeError('at least one model is needed');
  for (const [name, share] of [
    ['stream share', mix.streamShare],
    ['chat share', mix.chatShare],
    ['abort share', mix.abortShare],
  ] as const) {
    if (!(share >= 0 && share <= 1)) throw new RangeError(`${name} must be in [0, 1], found ${share}`);
  }
  if (!(Number.isInteger(mix.promptWords) && mix.promptWords >= 1)) {
    throw new RangeError(`prompt words must be a positive integer, found ${mix.promptWords}`);
  }
  const { min, max } = mix.maxTokens;
  if (!(Number.isInteger(min) && Number.isInteger(max) && min >= 1 && max >= min)) {
    throw new RangeError(`max_tokens range must be integers 1 <= min <= max, found ${min}-${max}`);
  }
}

/** An endless, seeded sequence of request plans. */
export class SoakPlanner {
  readonly #mix: SoakMix;
  readonly #rng: SeededRandom;
  #nextIndex = 0;

  constructor(mix: SoakMix, seed: number) {
    validateMix(mix);
    this.#mix = mix;
    this.#rng = new SeededRandom(seed);
  }

  next(): SoakRequestPlan {
    const rng = this.#rng;
    const mix = this.#mix;
    // Every draw happens on every request, so one knob does not shift the others' sequences.
    const model = mix.models[Math.floor(rng.next() * mix.models.length)]!;
    const isStreaming = rng.next() < mix.streamShare;
    const endpoint: Endpoint = rng.next() < mix.chatShare ? 'chat' : 'completions';
    const maxTokens =
      mix.maxTokens.min + Math.floor(rng.next() * (mix.maxTokens.max - mix.maxTokens.min + 1));
    const isAborted = rng.next() < mix.abortShare;
    const abortDraw = rng.next();
    const abortDetail = rng.next();
    const prompt = randomWords(mix.promptWords, rng);
    const spec: PromptSpec =
      endpoint === 'chat'
        ? { messages: [{ role: 'user', content: prompt }], maxTokens }
        : { prompt, maxTokens };
    return {
      index: this.#nextIndex++,
      model,
      endpoint,
      isStreaming,
      spec,
      abort: isAborted ? chooseAbortPoint(isStreaming, maxTokens, abortDraw, abortDetail) : null,
    };
  }
}

/** Non-streaming requests can only be cut before their (single) response; streams anywhere. */
export function chooseAbortPoint(
  isStreaming: boolean,
  maxTokens: number,
  draw: number,
  detail: number,
): AbortPoint {
  const kind = isStreaming ? ABORT_KINDS[Math.floor(draw * ABORT_KINDS.length)]! : 'before-response';
  if (kind === 'before-response') {
    return { kind, delayMs: Math.floor(detail * BEFORE_RESPONSE_MAX_DELAY_MS) };
  }
  if (kind === 'after-first-token') return { kind };
  // At least 2 chunks in (otherwise it is after-first-token), and before the last possible one.
  const last = Math.max(2, maxTokens - 1);
  return { kind, afterChunks: 2 + Math.floor(detail * (last - 1)) };
}

/**
 * The served ids a `--variants` list names: "all" is every served id; otherwise each name is a served
 * id ("stories260K:attn-2") or a variant's short name ("attn-2"). Unknown names are an error that
 * lists what is served.
 */
export function resolveModels(requested: readonly string[] | 'all', served: readonly string[]): string[] {
  if (requested === 'all') return [...served];
  const resolved: string[] = [];
  for (const name of requested) {
    const id = served.includes(name) ? name : served.find((s) => s.endsWith(`:${name}`));
    if (id === undefined) {
      throw new RangeError(`no served model or variant named '${name}' (served: ${served.join(', ')})`);
    }
    if (!resolved.includes(id)) resolved.push(id);
  }
  return resolved;
}

/** "32" or "8-64" → an inclusive range. */
export function parseTokenRange(text: string): { min: number; max: number } | null {
  const match = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(text);
  if (!match) return null;
  const min = Number(match[1]);
  const max = match[2] === undefined ? min : Number(match[2]);
  return min >= 1 && max >= min ? { min, max } : null;
}
