import type { TokenEvent } from '../../../engine/client.ts';
import type { TextFinish, TextGenerationRequest } from '../../../engine/output/text-generation.ts';
import { checkTokenIds } from '../../../engine/request/validate-generate.ts';
import { type ChatMessage, renderChatPrompt } from '../../../engine/tokenizer/chat-template.ts';
import { invalidRequest } from '../../http/errors.ts';
import { type ChoicePlan, startChoices } from '../common/choice-runner.ts';
import { resolveMaxTokens } from '../common/context-window.ts';
import { type CompletionUsage, dropserveUsageOf } from '../common/dropserve-usage.ts';
import { type ChatTokenLogprob, chatLogprobsOf } from '../common/logprobs.ts';
import { routeVariant } from '../common/resolve-variant.ts';
import {
  checkChoiceCount,
  checkStreamOptions,
  requestedMaxTokens,
  samplingOf,
  stopStringsOf,
} from '../common/sampling.ts';
import {
  engineRequestId,
  nowSeconds,
  type ServingContext,
  type ServingResult,
  settleFinish,
  stopReasonOf,
} from '../common/serving-context.ts';
import type { ChatRequest, ChatRequestMessage } from './schema.ts';

/**
 * /v1/chat/completions: messages → prompt through the model's chat template (the synthetic and
 * llama2.c models get a plain "Role: content" fallback), BOS added only if the template did not
 * write it, then the same generation path as completions.
 */
interface ChoiceState {
  text: string;
  tokens: TokenEvent[];
  finish?: TextFinish;
}

/** Text parts are joined with newlines (as vLLM does); "developer" is OpenAI's new name for system. */
function templateMessagesOf(messages: readonly ChatRequestMessage[]): ChatMessage[] {
  return messages.map((m) => ({
    role: m.role === 'developer' ? 'system' : m.role,
    content:
      typeof m.content === 'string' ? m.content : (m.content ?? []).map((part) => part.text).join('\n'),
  }));
}

export function chatPromptTokenIds(ctx: ServingContext, messages: readonly ChatRequestMessage[]): number[] {
  const { tokenizer } = ctx.engine;
  const rendered = renderChatPrompt(tokenizer, templateMessagesOf(messages), { addGenerationPrompt: true });
  return tokenizer.encode(rendered.text, { addBos: !rendered.hasBos });
}

export async function serveChatCompletion(ctx: ServingContext, body: ChatRequest): Promise<ServingResult> {
  const { engine } = ctx;
  const { tokenizer } = engine;
  checkStreamOptions(body);
  if (body.top_logprobs !== null && body.top_logprobs !== undefined && !body.logprobs) {
    throw invalidRequest('top_logprobs requires logprobs to be true', 'top_logprobs');
  }
  const variant = routeVariant(ctx, body.model, body.user);
  const promptTokenIds = chatPromptTokenIds(ctx, body.messages);
  const stopTokenIds = body.stop_token_ids ?? undefined;
  if (stopTokenIds) checkTokenIds(stopTokenIds, tokenizer.vocabSize, 'stop_token_ids');
  const n = body.n ?? 1;
  checkChoiceCount(1, n);
  const maxTokens = resolveMaxTokens({
    contextLength: engine.model.config.maxSeqLen,
    promptTokens: promptTokenIds.length,
    maxTokens: requestedMaxTokens(body),
    promptNoun: 'messages',
  });
  const wantsLogprobs = body.logprobs ?? false;
  const topLogprobs = body.top_logprobs ?? 0;
  const sampling = samplingOf(body);
  const id = `chatcmpl-${ctx.requestId}`;
  const plans = Array.from({ length: n }, (_, j): ChoicePlan => {
    const request: TextGenerationRequest = {
      requestId: engineRequestId(id, j),
      variant: variant.id,
      promptTokenIds,
      maxTokens,
      // As vLLM: with n > 1 each sample gets its own seed, so the n choices differ yet reproduce.
      sampling: { ...sampling, seed: sampling.seed === undefined ? undefined : sampling.seed + j },
      stopTokenIds,
      ignoreEos: body.ignore_eos ?? false,
      logprobs: wantsLogprobs,
      topLogprobs: wantsLogprobs ? topLogprobs : undefined,
      transport: 'http',
      stop: stopStringsOf(body),
      includeStopStringInOutput: body.include_stop_str_in_output ?? false,
    };
    return { index: j, promptIndex: 0, request };
  });
  const states = new Map<number, ChoiceState>(plans.map((p) => [p.index, { text: '', tokens: [] }]));
  const events = await startChoices(engine, plans, ctx.signal);
  const created = nowSeconds();
  const usage = (): CompletionUsage => {
    let completionTokens = 0;
    for (const s of states.values()) completionTokens += s.finish?.usage.completionTokens ?? 0;
    return {
      prompt_tokens: promptTokenIds.length,
      completion_tokens: completionTokens,
      total_tokens: promptTokenIds.length + completionTokens,
      ...dropserveUsageOf([...states.values()].map((s) => ({ promptIndex: 0, finish: s.finish }))),
    };
  };
  const logprobsOf = (tokens: readonly TokenEvent[]): { content: ChatTokenLogprob[] } | null =>
    wantsLogprobs ? { content: chatLogprobsOf(tokenizer, tokens, topLogprobs) } : null;

  if (!body.stream) {
    for await (const { index, event } of events) {
      const state = states.get(index)!;
      if (event.type === 'delta') {
        state.text += event.text;
        state.tokens.push(...event.tokens);
      } else {
        state.finish = event;
        settleFinish(ctx, event, maxTokens);
      }
    }
    return {
      kind: 'json',
      body: {
        id,
        object: 'chat.completion',
        created,
        model: variant.id,
        choices: [...states.entries()].map(([index, s]) => ({
          index,
          message: { role: 'assistant', content: s.text },
          logprobs: logprobsOf(s.tokens),
          finish_reason: s.finish!.reason,
          stop_reason: stopReasonOf(ctx, s.finish!),
        })),
        usage: usage(),
      },
    };
  }

  const includeUsage = body.stream_options?.include_usage ?? false;
  const chunk = (choice: Record<string, unknown>): Record<string, unknown> => ({
    id,
    object: 'chat.completion.chunk',
    created,
    model: variant.id,
    choices: [choice],
    ...(includeUsage ? { usage: null } : {}),
  });
  async function* chunks(): AsyncGenerator<Record<string, unknown>> {
    // OpenAI's stream opens each choice with the role.
    for (const index of states.keys()) {
      yield chunk({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    }
    for await (const { index, event } of events) {
      const state = states.get(index)!;
      if (event.type === 'delta') {
        if (event.text === '' && !(wantsLogprobs && event.tokens.length > 0)) continue;
        yield chunk({
          index,
          delta: { content: event.text },
          logprobs: logprobsOf(event.tokens),
          finish_reason: null,
        });
      } else {
        state.finish = event;
        settleFinish(ctx, event, maxTokens);
        yield chunk({
          index,
          delta: {},
          logprobs: null,
          finish_reason: event.reason,
          stop_reason: stopReasonOf(ctx, event),
        });
      }
    }
    if (includeUsage) {
      yield { id, object: 'chat.completion.chunk', created, model: variant.id, choices: [], usage: usage() };
    }
  }
  return { kind: 'stream', chunks: chunks() };
}
