import type { RequestTimings, TokenEvent } from '../../engine/client.ts';
import type { TextDelta, TextFinish } from '../../engine/output/text-generation.ts';

/** Message shapes of proto/dropserve.proto (snake_case, as proto-loader encodes them). */
export interface TopLogprobsMessage {
  token_ids: number[];
  logprobs: number[];
}

export interface UsageMessage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Only from an adaptive variant. */
  adaptive_drops?: { attention: number[]; mlp: number[] };
}

export interface TimingsMessage {
  queue_ms: number;
  prefill_ms: number;
  ttft_ms: number;
  decode_ms: number;
  e2e_ms: number;
}

/** GenerateResponse; CompleteResponse has the same fields. */
export interface GenerateResponseMessage {
  text: string;
  token_ids: number[];
  logprobs: number[];
  top_logprobs: TopLogprobsMessage[];
  finish_reason: string;
  stop_reason: string;
  usage?: UsageMessage;
  timings?: TimingsMessage;
  model: string;
}
export type CompleteResponseMessage = GenerateResponseMessage;

/** Which logprob fields a request asked for (GenerateRequest.logprobs). */
export interface LogprobsWanted {
  logprobs?: boolean;
  topLogprobs?: number;
}

export function deltaMessage(
  delta: TextDelta,
  model: string,
  wanted: LogprobsWanted,
): GenerateResponseMessage {
  return {
    text: delta.text,
    token_ids: delta.tokens.map((t) => t.tokenId),
    ...logprobFields(delta.tokens, wanted),
    finish_reason: '',
    stop_reason: '',
    model,
  };
}

/** The last message of a stream: no text, the finish fields. */
export function finishMessage(finish: TextFinish): GenerateResponseMessage {
  return {
    text: '',
    token_ids: [],
    logprobs: [],
    top_logprobs: [],
    finish_reason: finish.reason,
    stop_reason: finish.stopReason === undefined ? '' : String(finish.stopReason),
    usage: usageMessage(finish),
    timings: timingsMessage(finish.timings),
    model: finish.variant,
  };
}

/** Complete's single answer: every delta's text, tokens and logprobs, then the finish fields. */
export function completeMessage(
  deltas: readonly GenerateResponseMessage[],
  finish: TextFinish,
): CompleteResponseMessage {
  const last = finishMessage(finish);
  return {
    ...last,
    text: deltas.map((d) => d.text).join(''),
    token_ids: deltas.flatMap((d) => d.token_ids),
    logprobs: deltas.flatMap((d) => d.logprobs),
    top_logprobs: deltas.flatMap((d) => d.top_logprobs),
  };
}

function usageMessage(finish: TextFinish): UsageMessage {
  const { promptTokens, completionTokens } = finish.usage;
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    ...(finish.adaptiveDrops
      ? {
          adaptive_drops: {
            attention: [...finish.adaptiveDrops.attention],
            mlp: [...finish.adaptiveDrops.mlp],
          },
        }
      : {}),
  };
}

export function timingsMessage(t: RequestTimings): TimingsMessage {
  // A stage the request never reached reads 0 (proto3 has no "absent" for a plain double).
  const span = (fromMs?: number, toMs?: number): number =>
    fromMs === undefined || toMs === undefined ? 0 : Math.max(0, toMs - fromMs);
  return {
    queue_ms: span(t.arrivalMs, t.scheduledMs),
    prefill_ms: span(t.scheduledMs, t.prefillEndMs),
    ttft_ms: span(t.arrivalMs, t.firstTokenMs),
    decode_ms: span(t.firstTokenMs, t.lastTokenMs),
    e2e_ms: span(t.arrivalMs, t.finishedMs),
  };
}

function logprobFields(
  tokens: readonly TokenEvent[],
  wanted: LogprobsWanted,
): Pick<GenerateResponseMessage, 'logprobs' | 'top_logprobs'> {
  if (!wanted.logprobs) return { logprobs: [], top_logprobs: [] };
  return {
    logprobs: tokens.map((t) => t.logprob ?? 0),
    top_logprobs:
      (wanted.topLogprobs ?? 0) > 0
        ? tokens.map((t) => ({
            token_ids: (t.topLogprobs ?? []).map((a) => a.tokenId),
            logprobs: (t.topLogprobs ?? []).map((a) => a.logprob),
          }))
        : [],
  };
}
