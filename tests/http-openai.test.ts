import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderChatPrompt } from '../engine/tokenizer/chat-template.ts';
import { startTestServer, TEST_MODEL_NAME, type TestServer } from './support/test-server.ts';

/**
 * The OpenAI API end to end: the official `openai` client against a real server on 127.0.0.1 with
 * the real engine in its worker thread (synthetic 4-layer model, byte tokenizer).
 */
let t: TestServer;
let client: OpenAI;
const MODEL = TEST_MODEL_NAME;
const PRUNED = `${TEST_MODEL_NAME}:attn-2`;

// vLLM's sampling extensions are not in the SDK's types; the server accepts them.
type Extra = {
  ignore_eos?: boolean;
  top_k?: number;
  include_stop_str_in_output?: boolean;
  stop_token_ids?: number[];
};
type CompletionParams = OpenAI.CompletionCreateParamsNonStreaming & Extra;
type ChatParams = OpenAI.ChatCompletionCreateParamsNonStreaming & Extra;

const complete = (p: Partial<CompletionParams>): Promise<OpenAI.Completion> =>
  client.completions.create({ model: MODEL, prompt: 'Hello', ...p } as CompletionParams);
const chat = (p: Partial<ChatParams>): Promise<OpenAI.ChatCompletion> =>
  client.chat.completions.create({
    model: MODEL,
    messages: [{ role: 'user', content: 'hi' }],
    ...p,
  } as ChatParams);

beforeAll(async () => {
  t = await startTestServer({ variants: [{ name: 'attn-2', spec: 'attn:1,3' }] });
  client = t.client;
});
afterAll(async () => {
  await t?.close();
});

describe('models', () => {
  it('lists the full model and every variant, vLLM-style', async () => {
    const page = await client.models.list();
    const models = page.data as (OpenAI.Model & { root: string; parent: string | null })[];
    expect(models.map((m) => m.id)).toEqual([MODEL, PRUNED]);
    expect(models.every((m) => m.owned_by === 'dropserve' && m.object === 'model')).toBe(true);
    expect(models[0]!.parent).toBeNull();
    expect(models[1]!.parent).toBe(MODEL);
    const one = await client.models.retrieve(PRUNED);
    expect(one.id).toBe(PRUNED);
  });
});

describe('completions', () => {
  it('counts usage exactly: BOS + prompt bytes, and one completion token per generated token', async () => {
    const r = await complete({
      prompt: 'Hello',
      max_tokens: 12,
      temperature: 0,
      ignore_eos: true,
      logprobs: 0,
    });
    expect(r.object).toBe('text_completion');
    expect(r.model).toBe(MODEL);
    expect(r.usage).toEqual({ prompt_tokens: 1 + 5, completion_tokens: 12, total_tokens: 18 });
    expect(r.choices[0]!.finish_reason).toBe('length');
    expect(r.choices[0]!.logprobs!.tokens).toHaveLength(12);
  });

  it('streams the same greedy text, and the usage chunk counts the tokens streamed', async () => {
    const whole = await complete({ max_tokens: 16, temperature: 0, ignore_eos: true });
    const stream = await client.completions.create({
      model: MODEL,
      prompt: 'Hello',
      max_tokens: 16,
      temperature: 0,
      ignore_eos: true,
      logprobs: 0,
      stream: true,
      stream_options: { include_usage: true },
    } as OpenAI.CompletionCreateParamsStreaming & Extra);
    let text = '';
    let tokensStreamed = 0;
    let usage: OpenAI.CompletionUsage | null | undefined;
    let finish: string | null = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.text;
        tokensStreamed += choice.logprobs?.tokens?.length ?? 0;
        finish = choice.finish_reason ?? finish;
      }
    }
    expect(text).toBe(whole.choices[0]!.text);
    expect(finish).toBe('length');
    expect(tokensStreamed).toBe(16);
    expect(usage).toEqual({ prompt_tokens: 6, completion_tokens: 16, total_tokens: 22 });
  });

  it('max_tokens ends the sequence with finish_reason "length"', async () => {
    const r = await complete({ max_tokens: 3, ignore_eos: true });
    expect(r.choices[0]!.finish_reason).toBe('length');
    expect(r.usage!.completion_tokens).toBe(3);
  });

  it('stops at a stop string (excluded by default, included on request)', async () => {
    const base = (await complete({ max_tokens: 40, temperature: 0, ignore_eos: true })).choices[0]!.text;
    // A stop string taken from the middle of the greedy text, avoiding replacement characters.
    const clean = [...base].map((ch, i) => ({ ch, i })).filter(({ ch }) => ch !== '\uFFFD' && ch !== '<');
    const pick = clean[Math.floor(clean.length / 2)]!;
    const stop = pick.ch;
    const expected = base.slice(0, base.indexOf(stop));
    const r = await complete({ max_tokens: 40, temperature: 0, ignore_eos: true, stop: [stop] });
    expect(r.choices[0]!.text).toBe(expected);
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expect((r.choices[0] as { stop_reason?: unknown }).stop_reason).toBe(stop);
    const kept = await complete({
      max_tokens: 40,
      temperature: 0,
      ignore_eos: true,
      stop,
      include_stop_str_in_output: true,
    });
    expect(kept.choices[0]!.text).toBe(expected + stop);
  });

  it('a seed reproduces a sampled completion at temperature 1; another seed differs', async () => {
    const run = (seed: number): Promise<string> =>
      complete({ max_tokens: 24, temperature: 1, seed, ignore_eos: true }).then((r) => r.choices[0]!.text);
    const [a, b, c] = await Promise.all([run(11), run(11), run(12)]);
    expect(a).toBe(b);
    expect(a).not.toBe(c);
  });

  it('returns legacy logprobs: tokens, token_logprobs, top_logprobs and text_offset line up', async () => {
    const r = await complete({ max_tokens: 8, temperature: 0, ignore_eos: true, logprobs: 3 });
    const lp = r.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(8);
    expect(lp.token_logprobs).toHaveLength(8);
    expect(lp.top_logprobs).toHaveLength(8);
    expect(lp.text_offset).toHaveLength(8);
    expect(lp.text_offset![0]).toBe(0);
    for (let i = 0; i < 8; i++) {
      const chosen = lp.token_logprobs![i]!;
      const top = lp.top_logprobs![i]!;
      expect(chosen).toBeLessThanOrEqual(0);
      expect(Object.keys(top).length).toBeGreaterThanOrEqual(3);
      // Greedy: the chosen token is the most likely one.
      expect(chosen).toBeCloseTo(Math.max(...Object.values(top)), 5);
      if (i > 0) expect(lp.text_offset![i]!).toBeGreaterThanOrEqual(lp.text_offset![i - 1]!);
    }
  });

  it('echo puts the prompt (and its logprobs) in front of the completion', async () => {
    const r = await complete({ prompt: 'Echo', max_tokens: 2, echo: true, logprobs: 1, ignore_eos: true });
    const choice = r.choices[0]!;
    expect(choice.text.startsWith('Echo')).toBe(true);
    // <s> E c h o, then the two generated tokens.
    expect(choice.logprobs!.tokens!.slice(0, 5)).toEqual(['<s>', 'E', 'c', 'h', 'o']);
    expect(choice.logprobs!.token_logprobs![0]).toBeNull();
    expect(choice.logprobs!.token_logprobs![1]).toBeLessThan(0);
    expect(choice.logprobs!.tokens).toHaveLength(7);
  });

  it('gives one choice per prompt, n per prompt with index = prompt_index * n + j', async () => {
    const r = await complete({ prompt: ['ab', 'xyz'], n: 2, max_tokens: 4, seed: 5, ignore_eos: true });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(r.usage!.prompt_tokens).toBe(3 + 4);
    expect(r.usage!.completion_tokens).toBe(16);
  });

  it('takes token-id prompts as given (no BOS added)', async () => {
    const ids = [1, 3 + 72, 3 + 105]; // <s> H i
    const single = await complete({ prompt: ids, max_tokens: 2, ignore_eos: true });
    expect(single.usage!.prompt_tokens).toBe(3);
    const batch = await complete({ prompt: [ids, [3 + 65]], max_tokens: 2, ignore_eos: true });
    expect(batch.choices).toHaveLength(2);
    expect(batch.usage!.prompt_tokens).toBe(4);
  });

  it('serves a pruned variant under its own name', async () => {
    const r = await complete({ model: PRUNED, max_tokens: 4, ignore_eos: true });
    expect(r.model).toBe(PRUNED);
    expect(r.usage!.completion_tokens).toBe(4);
  });
});

describe('chat completions', () => {
  const messages = [
    { role: 'system' as const, content: 'Be brief.' },
    { role: 'user' as const, content: 'hi' },
  ];

  it('templates the messages once, with BOS once, and counts usage exactly', async () => {
    const r = await chat({ messages, max_tokens: 5, ignore_eos: true });
    const rendered = renderChatPrompt(t.server.engine.tokenizer, messages, { addGenerationPrompt: true });
    expect(rendered.hasBos).toBe(false);
    // Byte tokenizer: one token per byte of the rendered prompt, plus BOS.
    expect(r.usage!.prompt_tokens).toBe(1 + Buffer.byteLength(rendered.text));
    expect(r.usage!.completion_tokens).toBe(5);
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0]!.message.role).toBe('assistant');
    expect(r.choices[0]!.finish_reason).toBe('length');
  });

  it('streams role first, then content, then the finish and a usage chunk', async () => {
    const whole = await chat({ messages, max_tokens: 10, temperature: 0, ignore_eos: true });
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 10,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    } as OpenAI.ChatCompletionCreateParamsStreaming & Extra);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const text = chunks.map((c) => c.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(whole.choices[0]!.message.content);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(whole.usage);
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe('length');
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it('returns chat logprobs with top_logprobs alternatives', async () => {
    const r = await chat({
      max_tokens: 6,
      temperature: 0,
      ignore_eos: true,
      logprobs: true,
      top_logprobs: 2,
    });
    const content = r.choices[0]!.logprobs!.content!;
    expect(content).toHaveLength(6);
    for (const entry of content) {
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(entry.top_logprobs).toHaveLength(2);
      expect(entry.top_logprobs[0]!.logprob).toBeGreaterThanOrEqual(entry.top_logprobs[1]!.logprob);
      expect(entry.logprob).toBeCloseTo(entry.top_logprobs[0]!.logprob, 5);
      expect(Array.isArray(entry.bytes)).toBe(true);
    }
  });

  it('n > 1 with a seed gives n different, reproducible choices', async () => {
    const a = await chat({ n: 3, seed: 7, temperature: 1, max_tokens: 12, ignore_eos: true });
    const b = await chat({ n: 3, seed: 7, temperature: 1, max_tokens: 12, ignore_eos: true });
    const texts = a.choices.map((c) => c.message.content);
    expect(texts).toEqual(b.choices.map((c) => c.message.content));
    expect(new Set(texts).size).toBe(3);
  });
});
