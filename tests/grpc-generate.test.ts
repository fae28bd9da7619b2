import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { InProcessEngine } from '../engine/engine.ts';
import type { CompleteResponseMessage, GenerateResponseMessage } from '../server/grpc/generate-response.ts';
import type {
  DetokenizeResponseMessage,
  ListModelsResponseMessage,
  TokenizeResponseMessage,
} from '../server/grpc/model-handlers.ts';
import { collectStream, type GrpcTestClient } from '../server/grpc/testing/grpc-test-client.ts';
import {
  createTestEngine,
  RecordingObserver,
  startTestGrpcServer,
  TEST_MODEL,
  TEST_VARIANT,
  type TestGrpcServer,
} from '../server/grpc/testing/test-server.ts';

const SERVICE = 'dropserve.v1.Dropserve';

let engine: InProcessEngine;
let server: TestGrpcServer;
let client: GrpcTestClient;
const observer = new RecordingObserver();

beforeAll(async () => {
  engine = await createTestEngine();
  server = await startTestGrpcServer(engine, { metrics: observer });
  client = server.client;
});
afterAll(async () => {
  await server.close();
  await engine.close();
});

async function generate(request: object): Promise<GenerateResponseMessage[]> {
  const { messages, error } = await collectStream(
    client.serverStream<GenerateResponseMessage>(SERVICE, 'Generate', request),
  );
  expect(error).toBeUndefined();
  return messages;
}

const complete = (request: object): Promise<CompleteResponseMessage> =>
  client.unary<CompleteResponseMessage>(SERVICE, 'Complete', request);

/** A stream's deltas joined, with the last message's finish fields. */
function joined(messages: GenerateResponseMessage[]): CompleteResponseMessage {
  const last = messages.at(-1)!;
  return {
    ...last,
    text: messages.map((m) => m.text).join(''),
    token_ids: messages.flatMap((m) => m.token_ids),
    logprobs: messages.flatMap((m) => m.logprobs),
    top_logprobs: messages.flatMap((m) => m.top_logprobs),
  };
}

const GREEDY = { prompt: 'Once upon a time', max_tokens: 40, temperature: 0, ignore_eos: true };

describe('Generate and Complete on the real engine', () => {
  it('streams deltas then one finish message; tokens decode to the text; usage counts BOS and every token', async () => {
    const messages = await generate(GREEDY);
    const deltas = messages.slice(0, -1);
    const last = messages.at(-1)!;
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.every((m) => m.finish_reason === '' && m.usage === null && m.model === TEST_MODEL)).toBe(
      true,
    );
    expect(last).toMatchObject({ finish_reason: 'length', text: '', token_ids: [], model: TEST_MODEL });

    const all = joined(messages);
    expect(all.token_ids).toHaveLength(40);
    expect(engine.tokenizer.decode(all.token_ids)).toBe(all.text);
    const promptTokens = engine.tokenizer.encode(GREEDY.prompt, { addBos: true }).length;
    expect(promptTokens).toBe(GREEDY.prompt.length + 1);
    expect(last.usage).toEqual({
      prompt_tokens: promptTokens,
      completion_tokens: 40,
      total_tokens: promptTokens + 40,
      // Only an adaptive variant sets it; proto-loader (defaults on) shows an absent message as null.
      adaptive_drops: null,
    });
    expect(last.timings!.e2e_ms).toBeGreaterThan(0);
    expect(last.timings!.ttft_ms).toBeLessThanOrEqual(last.timings!.e2e_ms);
  });

  it('greedy is deterministic, and Complete answers exactly what Generate streams', async () => {
    const [first, second, unary] = [
      joined(await generate(GREEDY)),
      joined(await generate(GREEDY)),
      await complete(GREEDY),
    ];
    expect(second.token_ids).toEqual(first.token_ids);
    expect(second.text).toBe(first.text);
    const { timings: _a, ...streamed } = first;
    const { timings: _b, ...answered } = unary;
    expect(answered).toEqual(streamed);
  });

  it('a text prompt equals its token ids with BOS; add_bos false drops it; an empty model is the full one', async () => {
    const ids = engine.tokenizer.encode(GREEDY.prompt, { addBos: true });
    const byText = await complete(GREEDY);
    const byIds = await complete({ ...GREEDY, prompt: undefined, prompt_token_ids: { ids } });
    expect(byIds.token_ids).toEqual(byText.token_ids);
    expect(byIds.usage).toEqual(byText.usage);
    const noBos = await complete({ ...GREEDY, add_bos: false });
    expect(noBos.usage!.prompt_tokens).toBe(ids.length - 1);
    const named = await complete({ ...GREEDY, model: TEST_MODEL });
    expect(named.token_ids).toEqual(byText.token_ids);
  });

  it('serves the pruned variant by name and reports it', async () => {
    const full = await complete(GREEDY);
    const pruned = await complete({ ...GREEDY, model: TEST_VARIANT });
    expect(pruned.model).toBe(TEST_VARIANT);
    expect(pruned.token_ids).toHaveLength(40);
    expect(pruned.token_ids).not.toEqual(full.token_ids);
  });

  it('max_tokens 0 fills the context; a stop string ends the text before it and is the stop_reason', async () => {
    // 240 prompt tokens with BOS leave 16 of the 256-token context.
    const filled = await complete({ ...GREEDY, prompt: 'a'.repeat(239), max_tokens: 0 });
    expect(filled.usage).toMatchObject({ prompt_tokens: 240, completion_tokens: 16, total_tokens: 256 });
    // The full greedy completion, cut at a stop string taken from its middle.
    const full = await complete(GREEDY);
    const stop = full.text.slice(10, 12);
    const stopped = await complete({ ...GREEDY, stop: [stop] });
    expect(stopped).toMatchObject({ finish_reason: 'stop', stop_reason: stop });
    expect(stopped.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
    expect(stopped.usage!.completion_tokens).toBeLessThan(40);
  });

  it('logprobs: one per token; top alternatives best first, the greedy pick at their head', async () => {
    const { token_ids, logprobs, top_logprobs } = joined(
      await generate({ ...GREEDY, max_tokens: 12, logprobs: 3 }),
    );
    expect(logprobs).toHaveLength(token_ids.length);
    expect(top_logprobs).toHaveLength(token_ids.length);
    top_logprobs.forEach((top, i) => {
      expect(top.token_ids).toHaveLength(3);
      expect(top.token_ids[0]).toBe(token_ids[i]);
      expect(top.logprobs[0]).toBeCloseTo(logprobs[i]!, 5);
      expect(top.logprobs[0]).toBeGreaterThanOrEqual(top.logprobs[1]!);
      expect(top.logprobs[2]).toBeLessThan(0);
    });
    const without = await complete({ ...GREEDY, max_tokens: 4 });
    expect([without.logprobs, without.top_logprobs]).toEqual([[], []]);
  });

  it('a seeded sampled request repeats itself', async () => {
    const sampled = { ...GREEDY, temperature: 0.9, top_p: 0.95, seed: 7 };
    expect((await complete(sampled)).token_ids).toEqual((await complete(sampled)).token_ids);
  });

  it('reports every finished request to metrics with the usage the client saw', async () => {
    const before = observer.requests.length;
    const answer = await complete({ ...GREEDY, max_tokens: 5 });
    const observed = observer.requests.slice(before);
    expect(observed).toHaveLength(1);
    expect(observed[0]).toMatchObject({
      variant: TEST_MODEL,
      transport: 'grpc',
      maxTokens: 5,
      finish: {
        reason: 'length',
        usage: {
          promptTokens: answer.usage!.prompt_tokens,
          completionTokens: answer.usage!.completion_tokens,
        },
      },
    });
    expect(observed[0]!.receivedMs).toBeLessThanOrEqual(observed[0]!.finish.timings.arrivalMs);
  });
});

describe('ListModels, Tokenize, Detokenize', () => {
  it('lists the full model and the variant with drop lists and KV bytes per token', async () => {
    const { models } = await client.unary<ListModelsResponseMessage>(SERVICE, 'ListModels', {});
    expect(models.map((m) => m.id)).toEqual([TEST_MODEL, TEST_VARIANT]);
    // 2 (K and V) × kept attention layers × 2 KV heads × head dim 16 × 4 bytes.
    expect(models[0]).toMatchObject({
      base: TEST_MODEL,
      drop_attention: [],
      kv_bytes_per_token: 2 * 4 * 2 * 16 * 4,
    });
    expect(models[1]).toMatchObject({
      base: TEST_MODEL,
      drop_attention: [1],
      drop_mlp: [],
      has_emulation: false,
      kv_bytes_per_token: 2 * 3 * 2 * 16 * 4,
      max_context: 256,
      num_layers: 4,
      requests_running: 0,
      requests_waiting: 0,
    });
    expect(models[1]!.kv_cache_budget_bytes).toBeGreaterThan(0);
  });

  it('round-trips text through token ids', async () => {
    const text = 'héllo, wörld ✓';
    const tokens = await client.unary<TokenizeResponseMessage>(SERVICE, 'Tokenize', {
      model: TEST_VARIANT,
      text,
    });
    expect(tokens.token_ids).toEqual(engine.tokenizer.encode(text, { addBos: true }));
    expect(tokens.count).toBe(tokens.token_ids.length);
    expect(tokens.tokens.slice(0, 2)).toEqual(['<s>', 'h']);
    expect(tokens.max_context).toBe(256);
    const back = await client.unary<DetokenizeResponseMessage>(SERVICE, 'Detokenize', {
      token_ids: tokens.token_ids,
    });
    expect(back.text).toBe(text);
    const noBos = await client.unary<TokenizeResponseMessage>(SERVICE, 'Tokenize', { text, add_bos: false });
    expect(noBos.token_ids).toEqual(tokens.token_ids.slice(1));
  });
});
