import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderChatPrompt } from '../engine/tokenizer/chat-template.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/** A trained model (stories260K, llama2.c format, sentencepiece tokenizer) behind the HTTP API. */
let t: TestServer;

beforeAll(async () => {
  t = await startTestServer({ model: 'stories260K', variants: [{ name: 'attn-1', spec: 'attn:1' }] });
});
afterAll(async () => {
  await t?.close();
});

describe('stories260K over HTTP', () => {
  it('serves it under its file name, with the pruned variant beside it', async () => {
    const ids = (await t.client.models.list()).data.map((m) => m.id);
    expect(ids).toEqual(['stories260K', 'stories260K:attn-1']);
  });

  it('greedy completion is English-like text; usage counts BOS + sentencepiece tokens', async () => {
    const prompt = 'Once upon a time';
    const r = await t.client.completions.create({
      model: t.modelName,
      prompt,
      max_tokens: 40,
      temperature: 0,
    });
    const text = r.choices[0]!.text;
    expect(text).toMatch(/[a-z]+ [a-z]+ [a-z]+/);
    const expectedPromptTokens = t.server.engine.tokenizer.encode(prompt, { addBos: true }).length;
    expect(r.usage!.prompt_tokens).toBe(expectedPromptTokens);
    expect(expectedPromptTokens).toBeGreaterThan(1);
    expect(expectedPromptTokens).toBeLessThan(prompt.length);
  });

  it('a greedy story ends at BOS with finish_reason "stop", as llama2.c run.c ends it; ignore_eos runs on', async () => {
    const request = { model: t.modelName, prompt: 'Once upon a time', max_tokens: 400, temperature: 0 };
    const response = await t.client.completions.create(request);
    const story = response.choices[0]!;
    expect(story.finish_reason).toBe('stop');
    // BOS ends the story: a finish on an end-of-sequence id, not a stop string or stop_token_ids.
    expect((story as { stop_reason?: unknown }).stop_reason).toBeNull();
    expect(response.usage!.completion_tokens).toBe(341);
    expect(story.text).toMatch(/She was so happy and said, "Thank you, Lily! You are a good friend\."$/);

    const runOn = await t.client.completions.create({ ...request, ignore_eos: true } as typeof request);
    expect(runOn.choices[0]!.finish_reason).toBe('length');
    expect(runOn.usage!.completion_tokens).toBe(400);
    // The next story starts where the first one ended.
    expect(runOn.choices[0]!.text.startsWith(`${story.text}Once upon a time, there was`)).toBe(true);
  });

  it('chat: prompt tokens are those of the rendered template, BOS once', async () => {
    const messages = [{ role: 'user' as const, content: 'Tell me about a cat.' }];
    const r = await t.client.chat.completions.create({
      model: t.modelName,
      messages,
      max_tokens: 20,
      seed: 1,
    });
    const { tokenizer } = t.server.engine;
    const rendered = renderChatPrompt(tokenizer, messages, { addGenerationPrompt: true });
    const ids = tokenizer.encode(rendered.text, { addBos: !rendered.hasBos });
    expect(ids.filter((id) => id === tokenizer.bosTokenId)).toHaveLength(1);
    expect(r.usage!.prompt_tokens).toBe(ids.length);
  });

  it('streamed token count equals completion_tokens, on the pruned variant too', async () => {
    for (const model of [t.modelName, `${t.modelName}:attn-1`]) {
      const stream = await t.client.completions.create({
        model,
        prompt: 'The little dog',
        max_tokens: 30,
        logprobs: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      let tokens = 0;
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const chunk of stream) {
        tokens += chunk.choices[0]?.logprobs?.tokens?.length ?? 0;
        if (chunk.usage) usage = chunk.usage;
      }
      expect(tokens).toBe(usage!.completion_tokens);
      expect(tokens).toBeGreaterThan(0);
    }
  });
});
