import type { TextFinish, TextGenerationRequest } from '../../../engine/output/text-generation.ts';
import { checkPromptNotEmpty, checkTokenIds } from '../../../engine/request/validate-generate.ts';
import type { Tokenizer } from '../../../engine/tokenizer/tokenizer.ts';
import { type ChoicePlan, startChoices } from '../common/choice-runner.ts';
import { resolveMaxTokens } from '../common/context-window.ts';
import { type CompletionUsage, dropserveUsageOf } from '../common/dropserve-usage.ts';
import { type CompletionLogprobs, CompletionLogprobsBuilder, topOfDistribution } from '../common/logprobs.ts';
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
import type { CompletionRequest } from './schema.ts';

/**
 * /v1/completions: one choice per prompt (n per prompt with n > 1, index = prompt_index * n + j),
 * optional echo of the prompt, legacy logprobs, streaming with an optional usage chunk.
 */
interface Prompt {
  text: string;
  ids: number[];
}

interface ChoiceState {
  promptIndex: number;
  text: string;
  logprobs?: CompletionLogprobsBuilder;
  finish?: TextFinish;
}

/** String prompts are tokenized with BOS, as the model was trained; token prompts are taken as given. */
function promptsOf(tokenizer: Tokenizer, prompt: CompletionRequest['prompt']): Prompt[] {
  if (typeof prompt === 'string') return [{ text: prompt, ids: tokenizer.encode(prompt, { addBos: true }) }];
  if (prompt.every((p) => typeof p === 'string')) {
    return (prompt as string[]).map((text) => ({ text, ids: tokenizer.encode(text, { addBos: true }) }));
  }
  if (prompt.every((p) => typeof p === 'number')) {
    const ids = prompt as number[];
    return [{ text: tokenizer.decode(ids), ids }];
  }
  return (prompt as number[][]).map((ids) => ({ text: tokenizer.decode(ids), ids }));
}

export async function serveCompletion(ctx: ServingContext, body: CompletionRequest): Promise<ServingResult> {
  const { engine } = ctx;
  const { tokenizer } = engine;
  checkStreamOptions(body);
  const variant = routeVariant(ctx, body.model, body.user);
  const prompts = promptsOf(tokenizer, body.prompt);
  for (const p of prompts) {
    checkPromptNotEmpty(p.ids);
    checkTokenIds(p.ids, tokenizer.vocabSize, 'prompt');
  }
  const stopTokenIds = body.stop_token_ids ?? undefined;
  if (stopTokenIds) checkTokenIds(stopTokenIds, tokenizer.vocabSize, 'stop_token_ids');
  const n = body.n ?? 1;
  checkChoiceCount(prompts.length, n);
  const contextLength = engine.model.config.maxSeqLen;
  const requested = requestedMaxTokens(body);
  const maxTokens = prompts.map((p) =>
    resolveMaxTokens({
      contextLength,
      promptTokens: p.ids.length,
      maxTokens: requested,
      promptNoun: 'prompt',
    }),
  );
  const numLogprobs = body.logprobs ?? undefined;
  const isEcho = body.echo ?? false;
  const sampling = samplingOf(body);
  const id = `cmpl-${ctx.requestId}`;
  const plans: ChoicePlan[] = prompts.flatMap((p, promptIndex) =>
    Array.from({ length: n }, (_, j): ChoicePlan => {
      const index = promptIndex * n + j;
      const request: TextGenerationRequest = {
        requestId: engineRequestId(id, index),
        variant: variant.id,
        promptTokenIds: p.ids,
        maxTokens: maxTokens[promptIndex]!,
        // As vLLM: with n > 1 each sample gets its own seed, so the n choices differ yet reproduce.
        sampling: { ...sampling, seed: sampling.seed === undefined ? undefined : sampling.seed + j },
        stopTokenIds,
        ignoreEos: body.ignore_eos ?? false,
        logprobs: numLogprobs !== undefined,
        topLogprobs: numLogprobs,
        transport: 'http',
        stop: stopStringsOf(body),
        includeStopStringInOutput: body.include_stop_str_in_output ?? false,
      };
      return { index, promptIndex, request };
    }),
  );
  const states = new Map<number, ChoiceState>();
  for (const plan of plans) {
    const p = prompts[plan.promptIndex]!;
    const state: ChoiceState = { promptIndex: plan.promptIndex, text: isEcho ? p.text : '' };
    if (numLogprobs !== undefined) state.logprobs = new CompletionLogprobsBuilder(tokenizer);
    states.set(plan.index, state);
  }
  if (isEcho && numLogprobs !== undefined) {
    const scored = await Promise.all(prompts.map((p) => scorePrompt(ctx, variant.id, p, numLogprobs)));
    for (const [, state] of states) {
      const p = prompts[state.promptIndex]!;
      const s = scored[state.promptIndex]!;
      state.logprobs!.addPrompt(p.ids, p.text, s.logprobs, s.tops);
    }
  }
  const events = await startChoices(engine, plans, ctx.signal);
  const created = nowSeconds();
  const usage = (): CompletionUsage => {
    const promptTokens = prompts.reduce((sum, p) => sum + p.ids.length, 0);
    let completionTokens = 0;
    for (const s of states.values()) completionTokens += s.finish?.usage.completionTokens ?? 0;
    return {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
      ...dropserveUsageOf(states.values(), prompts.length),
    };
  };

  if (!body.stream) {
    for await (const { index, event } of events) {
      const state = states.get(index)!;
      if (event.type === 'delta') {
        state.text += event.text;
        state.logprobs?.addDelta(event);
      } else {
        state.finish = event;
        settleFinish(ctx, event, maxTokens[state.promptIndex]!);
      }
    }
    return {
      kind: 'json',
      body: {
        id,
        object: 'text_completion',
        created,
        model: variant.id,
        choices: [...states.entries()].map(([index, s]) => ({
          index,
          text: s.text,
          logprobs: s.logprobs?.all ?? null,
          finish_reason: s.finish!.reason,
          stop_reason: stopReasonOf(ctx, s.finish!),
        })),
        usage: usage(),
      },
    };
  }

  const includeUsage = body.stream_options?.include_usage ?? false;
  const chunk = (
    index: number,
    text: string,
    logprobs: CompletionLogprobs | null,
    finish?: TextFinish,
  ): Record<string, unknown> => ({
    id,
    object: 'text_completion',
    created,
    model: variant.id,
    choices: [
      {
        index,
        text,
        logprobs,
        finish_reason: finish?.reason ?? null,
        stop_reason: finish ? stopReasonOf(ctx, finish) : null,
      },
    ],
    ...(includeUsage ? { usage: null } : {}),
  });
  async function* chunks(): AsyncGenerator<Record<string, unknown>> {
    if (isEcho) {
      for (const [index, s] of states) yield chunk(index, s.text, s.logprobs?.all ?? null);
    }
    for await (const { index, event } of events) {
      const state = states.get(index)!;
      if (event.type === 'delta') {
        const part = state.logprobs?.addDelta(event) ?? null;
        if (event.text !== '' || (part && part.tokens.length > 0)) yield chunk(index, event.text, part);
      } else {
        state.finish = event;
        settleFinish(ctx, event, maxTokens[state.promptIndex]!);
        yield chunk(index, '', null, event);
      }
    }
    if (includeUsage)
      yield { id, object: 'text_completion', created, model: variant.id, choices: [], usage: usage() };
  }
  return { kind: 'stream', chunks: chunks() };
}

/** Logprobs of the prompt's own tokens (echo with logprobs), from one teacher-forced pass. */
async function scorePrompt(
  ctx: ServingContext,
  variant: string,
  prompt: Prompt,
  numLogprobs: number,
): Promise<{ logprobs: number[]; tops: (Record<string, number> | null)[] }> {
  if (prompt.ids.length < 2) return { logprobs: [], tops: [] };
  const result = await ctx.engine.score(
    {
      requestId: engineRequestId(`score-${ctx.requestId}`, 0),
      variant,
      tokenIds: prompt.ids,
      fromIndex: 1,
      returnDistributions: numLogprobs > 0,
    },
    ctx.signal,
  );
  const tops = result.tokenLogprobs.map((logprob, i) => {
    const top = result.distributions
      ? topOfDistribution(ctx.engine.tokenizer, result.distributions[i]!, numLogprobs)
      : {};
    const chosen = ctx.engine.tokenizer.tokenText(prompt.ids[i + 1]!);
    if (!(chosen in top)) top[chosen] = logprob;
    return top;
  });
  return { logprobs: result.tokenLogprobs, tops };
}
