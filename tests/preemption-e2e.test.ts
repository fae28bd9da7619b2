import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { type RunningServer, type StartServerOptions, startServer } from '../server/start-server.ts';
import { GatedEngine } from './support/gated-engine.ts';
import { STORIES_260K } from './support/shared-assets.ts';
import { scrapeMetrics } from './support/test-server.ts';

/**
 * Preemption as a client and an operator see it: a KV budget far below what concurrent greedy
 * requests grow to, on stories260K (full and a pruned variant). Every completion equals the one an
 * unconstrained server gives, and the preemptions are counted in /metrics and GET /v1/variants.
 * All requests are held in front of the engine until every one has arrived, so the engine starts
 * with all of them queued however the HTTP requests interleave.
 */
const BLOCK_TOKENS = 16;
/** 8 blocks of the full model (1280 B/token): less than three requests' final length. */
const TIGHT_BUDGET = 8 * BLOCK_TOKENS * 1280;
const VARIANTS = [{ name: 'attn-2', spec: { dropAttention: [1, 3], dropMlp: [] } }];
const STORY =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends.';

interface Completion {
  model: string;
  text: string;
  completionTokens: number;
}

describe('preemption under a tight KV budget, through HTTP', () => {
  let model: LoadedModel;
  const servers: RunningServer[] = [];
  const serve = async (
    kvCacheBytes: number,
    gate?: (engine: GatedEngine) => void,
  ): Promise<RunningServer> => {
    const options: StartServerOptions = {
      host: '127.0.0.1',
      port: 0,
      grpcPort: 0,
      collectProcessMetrics: false,
      createEngine: async () => {
        const engine = await createEngine({
          model,
          servedModelName: 'stories260K',
          variants: VARIANTS,
          kvCacheBytes,
          kvBlockTokens: BLOCK_TOKENS,
        });
        if (!gate) return engine;
        const gated = new GatedEngine(engine);
        gate(gated);
        return gated;
      },
    };
    const server = await startServer(options);
    servers.push(server);
    return server;
  };
  beforeAll(async () => {
    model = await loadModel({ model: STORIES_260K });
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close(0)));
  });

  /** 16 greedy requests, prompts of 4..34 tokens, 24..69 new tokens, alternating full and pruned. */
  const requests = (): { model: string; prompt: number[]; maxTokens: number }[] => {
    const ids = model.tokenizer.encode(STORY, { addBos: true });
    return Array.from({ length: 16 }, (_, i) => ({
      model: i % 2 === 0 ? 'stories260K' : 'stories260K:attn-2',
      prompt: ids.slice(0, 4 + ((i * 7) % 31)),
      maxTokens: 24 + ((i * 13) % 46),
    }));
  };

  const complete = async (server: RunningServer): Promise<Completion[]> => {
    const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
    return Promise.all(
      requests().map(async (r) => {
        const response = await client.completions.create({
          model: r.model,
          prompt: r.prompt,
          max_tokens: r.maxTokens,
          temperature: 0,
          ignore_eos: true,
        } as OpenAI.CompletionCreateParamsNonStreaming);
        return {
          model: r.model,
          text: response.choices[0]!.text,
          completionTokens: response.usage!.completion_tokens,
        };
      }),
    );
  };

  it('every request completes as without the limit, and the preemptions are counted', async () => {
    const unconstrained = await complete(await serve(64 * 1024 * 1024));
    let gated!: GatedEngine;
    const tight = await serve(TIGHT_BUDGET, (g) => {
      gated = g;
    });
    const answers = complete(tight);
    await gated.held(requests().length);
    gated.open();
    const constrained = await answers;

    expect(constrained).toEqual(unconstrained);
    expect(constrained.map((c) => c.completionTokens)).toEqual(requests().map((r) => r.maxTokens));

    const samples = await scrapeMetrics(tight.httpUrl);
    const views = (await (await fetch(`${tight.httpUrl}/v1/variants`)).json()) as {
      id: string;
      num_preemptions: number;
      kv_cache_bytes_allocated: number;
      kv_cache_budget_bytes: number;
    }[];
    let total = 0;
    for (const v of views) {
      expect(samples.get(`dropserve:num_preemptions_total{variant="${v.id}"}`)).toBe(v.num_preemptions);
      expect(v.kv_cache_bytes_allocated).toBeLessThanOrEqual(v.kv_cache_budget_bytes);
      total += v.num_preemptions;
    }
    expect(total).toBeGreaterThan(0);
    const unconstrainedViews = (await (await fetch(`${servers[0]!.httpUrl}/v1/variants`)).json()) as {
      num_preemptions: number;
    }[];
    expect(unconstrainedViews.every((v) => v.num_preemptions === 0)).toBe(true);
  }, 120_000);
});
