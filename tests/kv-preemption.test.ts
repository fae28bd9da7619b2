import type OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../engine/model/load-model.ts';
import { DEFAULT_KV_BLOCK_TOKENS } from '../kv-cache/kv-layout.ts';
import type { VariantView } from '../server/admin/variants/route.ts';
import { type CancelCountingEngine, createGatedEngine, type GatedRunner } from './support/gated-runner.ts';
import { KvMemorySampler, sequencesInEngine } from './support/kv-memory-sampler.ts';
import { STORIES_260K } from './support/shared-assets.ts';
import { eventually, scrapeMetrics, startTestServer, sumOf, type TestServer } from './support/test-server.ts';

/**
 * KV on demand with preemption, end to end: 32 concurrent greedy requests of mixed lengths on
 * stories260K and a pruned variant, served under a KV budget of a few blocks that holds a fraction of
 * them. The scheduler admits on the prompt's blocks and, when a decode step cannot grow, preempts and
 * later recomputes a sequence. Every request must come back exactly as it does from a server with room
 * for all of them: same tokens, nothing sent twice (the streamed tokens are the whole completion),
 * and /metrics must have counted the preemptions. How many there were is the scheduler's business.
 *
 * The constrained engine runs in process behind a gate that holds every model run until all 32
 * requests are in the engine, so the contention does not depend on how fast the client sends them.
 */

const FULL = 'stories260K';
const PRUNED_NAME = 'attn-2';
const PRUNED = `${FULL}:${PRUNED_NAME}`;
const PRUNED_SPEC = 'attn:2,3';
const FULL_KV_BYTES_PER_TOKEN = 1280; // 5 layers × 4 KV heads × head dim 8 × (K + V) × 4 bytes
/** 32 blocks of the full model: the longest request (≈ 215 tokens, 14 blocks) fits alone, 32 at once do not. */
const BUDGET_BLOCKS = 32;
const BUDGET_BYTES = BUDGET_BLOCKS * DEFAULT_KV_BLOCK_TOKENS * FULL_KV_BYTES_PER_TOKEN;
const REQUESTS = 32;

const NAMES = ['Lily', 'Tom', 'Sue', 'Ben', 'Mia', 'Max', 'Anna', 'Sam'];
const STARTS = ['went to the park', 'found a red ball', 'saw a big dog', 'wanted to play'];

interface Ask {
  model: string;
  prompt: string;
  maxTokens: number;
  ignoreEos: boolean;
  stream: boolean;
}

/** 32 different prompts, full and pruned in turn, max_tokens spread over 8..200, some streamed. */
function asks(): Ask[] {
  return Array.from({ length: REQUESTS }, (_, i) => ({
    model: i % 2 === 0 ? FULL : PRUNED,
    prompt: `${NAMES[i % NAMES.length]} ${STARTS[Math.floor(i / NAMES.length)]}.`,
    maxTokens: 8 + ((i * 61) % 193),
    // Most run to max_tokens so the lengths are what the test chose; every fourth may stop at EOS.
    ignoreEos: i % 4 !== 3,
    stream: i % 3 === 0,
  }));
}

interface Answer {
  text: string;
  tokens: string[];
  finishReason: string | null;
  promptTokens: number | undefined;
  completionTokens: number | undefined;
}

type Extra = { ignore_eos: boolean };

async function complete(client: OpenAI, ask: Ask): Promise<Answer> {
  const params = {
    model: ask.model,
    prompt: ask.prompt,
    max_tokens: ask.maxTokens,
    temperature: 0,
    logprobs: 0,
    ignore_eos: ask.ignoreEos,
  };
  if (!ask.stream) {
    const r = await client.completions.create(params as OpenAI.CompletionCreateParamsNonStreaming & Extra);
    const choice = r.choices[0]!;
    return {
      text: choice.text,
      tokens: choice.logprobs?.tokens ?? [],
      finishReason: choice.finish_reason,
      promptTokens: r.usage?.prompt_tokens,
      completionTokens: r.usage?.completion_tokens,
    };
  }
  const stream = await client.completions.create({
    ...params,
    stream: true,
    stream_options: { include_usage: true },
  } as OpenAI.CompletionCreateParamsStreaming & Extra);
  const answer: Answer = {
    text: '',
    tokens: [],
    finishReason: null,
    promptTokens: undefined,
    completionTokens: undefined,
  };
  for await (const chunk of stream) {
    if (chunk.usage) {
      answer.promptTokens = chunk.usage.prompt_tokens;
      answer.completionTokens = chunk.usage.completion_tokens;
    }
    for (const choice of chunk.choices) {
      answer.text += choice.text;
      answer.tokens.push(...(choice.logprobs?.tokens ?? []));
      answer.finishReason = choice.finish_reason ?? answer.finishReason;
    }
  }
  return answer;
}

let constrained: TestServer;
let reference: TestServer;
let engine: CancelCountingEngine | undefined;
let gate: GatedRunner | undefined;
let sampler: KvMemorySampler | undefined;
/** Set once all requests are in the engine; until then every model run waits at the gate. */
let released = false;

beforeAll(async () => {
  reference = await startTestServer({
    model: 'stories260K',
    variants: [{ name: PRUNED_NAME, spec: PRUNED_SPEC }],
    kvCacheBytes: 64 * 1024 * 1024,
  });
  constrained = await startTestServer({
    createEngine: async () => {
      ({ engine, gate } = await createGatedEngine(
        {
          model: await loadModel({ model: STORIES_260K }),
          servedModelName: FULL,
          variants: [{ name: PRUNED_NAME, spec: { dropAttention: [2, 3], dropMlp: [] } }],
          kvCacheBytes: BUDGET_BYTES,
          maxQueue: 64,
        },
        () => !released,
      ));
      sampler = new KvMemorySampler(engine.core);
      return engine;
    },
  });
}, 60_000);

afterAll(async () => {
  await constrained?.close();
  await reference?.close();
});

describe('KV on demand: preemption under a budget of a few blocks (stories260K, real server)', () => {
  it('32 concurrent greedy requests, full and pruned, all complete with the tokens of an unconstrained run; preemptions are counted', async () => {
    const views = (await (await fetch(`${constrained.url}/v1/variants`)).json()) as VariantView[];
    expect(views.find((v) => v.id === FULL)?.kv_bytes_per_token).toBe(FULL_KV_BYTES_PER_TOKEN);
    expect(views.find((v) => v.id === PRUNED)?.kv_bytes_per_token).toBe(768);

    const all = asks();
    const expected = await Promise.all(all.map((ask) => complete(reference.client, ask)));
    // Each request alone fits: the longest prompt + max_tokens needs at most the whole budget.
    const longest = Math.max(...expected.map((e) => e.promptTokens! + e.completionTokens!));
    expect(longest * FULL_KV_BYTES_PER_TOKEN).toBeLessThan(BUDGET_BYTES);

    const pending = all.map((ask) => complete(constrained.client, ask));
    await eventually(() => sequencesInEngine(engine!.core) === REQUESTS);
    released = true;
    gate!.recheck();
    const actual = await Promise.all(pending);

    for (const [i, answer] of actual.entries()) {
      const want = expected[i]!;
      const what = `request ${i} (${all[i]!.model}, max_tokens ${all[i]!.maxTokens})`;
      expect(answer.tokens, what).toEqual(want.tokens);
      expect(answer.text, what).toBe(want.text);
      expect(answer.finishReason, what).toBe(want.finishReason);
      // Nothing sent twice: the streamed/returned tokens are exactly the completion the usage counts.
      expect(answer.tokens.length, what).toBe(answer.completionTokens);
      expect(answer.completionTokens, what).toBe(want.completionTokens);
    }
    expect(actual.filter((a) => a.finishReason === 'length').length).toBeGreaterThan(REQUESTS / 2);

    const metrics = await scrapeMetrics(constrained.url);
    const preemptions = sumOf(metrics, 'dropserve:num_preemptions_total');
    expect(preemptions).toBeGreaterThan(0);
    const after = (await (await fetch(`${constrained.url}/v1/variants`)).json()) as (VariantView & {
      num_preemptions?: number;
    })[];
    expect(after.reduce((sum, v) => sum + (v.num_preemptions ?? 0), 0)).toBe(preemptions);
    // The reference had room for everyone.
    expect(sumOf(await scrapeMetrics(reference.url), 'dropserve:num_preemptions_total')).toBe(0);

    // The budget held after every model run, and it was what limited the run.
    expect(sampler!.steps).toBeGreaterThan(0);
    expect(sampler!.overBudget).toEqual([]);
    expect(sampler!.usedAboveAllocated).toEqual([]);
    expect(sampler!.maxAllocatedBytes).toBeGreaterThan(BUDGET_BYTES / 2);
    console.log(
      `${REQUESTS} requests under ${BUDGET_BLOCKS} blocks (${BUDGET_BYTES} B): ${preemptions} preemptions, ` +
        `at most ${sampler!.maxRunning} running at once, at most ${sampler!.maxAllocatedBytes} B allocated, ${sampler!.steps} model runs`,
    );
    const memory = engine!.core.kvMemory();
    expect(memory.budgetBytes).toBe(BUDGET_BYTES);
    expect(memory.usedBytes).toBe(0);
  });
});
