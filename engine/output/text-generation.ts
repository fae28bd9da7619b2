import type {
  EngineClient,
  FinishReason,
  GenerateRequest,
  RequestTimings,
  TokenEvent,
  Usage,
} from '../client.ts';
import { IncrementalDetokenizer } from '../tokenizer/incremental-detokenizer.ts';
import { StopStringMatcher } from './stop-strings.ts';

/**
 * Output processing shared by every transport: token events from the engine become text deltas,
 * with incremental detokenization and stop strings. A stop string ends the sequence by aborting it
 * in the engine (its KV slot is freed) and is reported as finish reason "stop".
 */
export interface TextGenerationRequest extends GenerateRequest {
  stop?: string[];
  /** Keep the matched stop string at the end of the text (vLLM's include_stop_str_in_output). */
  includeStopStringInOutput?: boolean;
}

export interface TextDelta {
  type: 'delta';
  text: string;
  /** Tokens consumed since the previous delta (their text may be partly held back). */
  tokens: TokenEvent[];
}

export interface TextFinish {
  type: 'finish';
  reason: FinishReason;
  usage: Usage;
  timings: RequestTimings;
  variant: string;
  /** The stop string or stop token that ended the sequence (OpenAI's `stop_reason`). */
  stopReason?: string | number;
  /** Epoch ms of every generated token, for inter-token latency metrics. */
  tokenTimesMs: number[];
  /** An adaptive variant's choice for this prompt (FinishEvent.adaptiveDrops). */
  adaptiveDrops?: { attention: number[]; mlp: number[] };
}

export type TextEvent = TextDelta | TextFinish;

export async function* generateText(
  engine: EngineClient,
  request: TextGenerationRequest,
  signal?: AbortSignal,
): AsyncGenerator<TextEvent> {
  const detokenizer = new IncrementalDetokenizer(engine.tokenizer, request.promptTokenIds);
  const matcher = new StopStringMatcher(request.stop ?? []);
  // The engine sequence is aborted either by the caller or by us when a stop string matches.
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal?.reason);
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort, { once: true });
  const tokenTimesMs: number[] = [];
  let pendingTokens: TokenEvent[] = [];
  let matchedStop: string | undefined;
  try {
    for await (const event of engine.generate(request, controller.signal)) {
      if (event.type === 'token') {
        // After a stop string the engine may still deliver a token that was in flight: not output.
        if (matchedStop !== undefined) continue;
        tokenTimesMs.push(event.timeMs);
        pendingTokens.push(event);
        const { text, stop } = matcher.push(detokenizer.push(event.tokenId));
        if (stop !== undefined) {
          matchedStop = stop;
          yield {
            type: 'delta',
            text: request.includeStopStringInOutput ? text + stop : text,
            tokens: pendingTokens,
          };
          pendingTokens = [];
          // Frees the slot; the engine answers with its own finish event, which carries the timings.
          controller.abort('stop string');
          continue;
        }
        if (text.length > 0) {
          yield { type: 'delta', text, tokens: pendingTokens };
          pendingTokens = [];
        }
        continue;
      }
      if (matchedStop === undefined) {
        const tail = matcher.push(detokenizer.flush()).text + matcher.flush();
        if (tail.length > 0 || pendingTokens.length > 0) {
          yield { type: 'delta', text: tail, tokens: pendingTokens };
          pendingTokens = [];
        }
      }
      const stoppedByString = matchedStop !== undefined && event.reason !== 'error';
      yield {
        type: 'finish',
        reason: stoppedByString ? 'stop' : event.reason,
        stopReason: stoppedByString ? matchedStop : event.stopTokenId,
        usage: { promptTokens: event.usage.promptTokens, completionTokens: tokenTimesMs.length },
        timings: event.timings,
        variant: event.variant,
        tokenTimesMs,
        ...(event.adaptiveDrops ? { adaptiveDrops: event.adaptiveDrops } : {}),
      };
      return;
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // Leaving early (consumer stopped iterating) must free the engine sequence too.
    controller.abort('consumer finished');
  }
}
