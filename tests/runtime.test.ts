import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateRequest } from '../engine/client.ts';
import { createEngine, type InProcessEngine } from '../engine/engine.ts';
import type { DropserveError } from '../engine/errors.ts';
import { loadLlama2cCheckpoint } from '../engine/model/llama2c-loader.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { syntheticModel, TINY_SYNTHETIC_SHAPE } from '../engine/model/synthetic.ts';
import { generatedTokenIds } from '../engine/output/token-ids.ts';
import { ByteTokenizer } from '../engine/tokenizer/byte-tokenizer.ts';
import { STORIES_260K } from './support/shared-assets.ts';

const GREEDY = { ...DEFAULT_SAMPLING, temperature: 0 };

let nextId = 0;
function request(variant: string, promptTokenIds: number[], maxTokens: number): GenerateRequest {
  return { requestId: `r${nextId++}`, variant, promptTokenIds, maxTokens, sampling: GREEDY };
}

function collect(engine: InProcessEngine, req: GenerateRequest, signal?: AbortSignal): Promise<number[]> {
  return generatedTokenIds(engine.generate(req, signal));
}

function promptOf(seed: number, length: number, vocab: number): number[] {
  return [1, ...Array.from({ length: length - 1 }, (_, i) => 3 + ((seed * 131 + i * 17) % (vocab - 3)))];
}

const smallModel = (): LoadedModel => syntheticModel(TINY_SYNTHETIC_SHAPE);

describe('continuous batching', () => {
  let engine: InProcessEngine;
  beforeAll(async () => {
    engine = await createEngine({
      model: smallModel(),
      servedModelName: 'm',
      variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
    });
  });
  afterAll(() => engine.close());

  it('16 sequences of different prompt lengths decoded together give the same greedy tokens as alone', async () => {
    const prompts = Array.from({ length: 16 }, (_, i) => promptOf(i, 2 + ((i * 7) % 23), 300));
    const variants = prompts.map((_, i) => (i % 3 === 0 ? 'm:attn-1' : 'm'));
    const alone: number[][] = [];
    for (let i = 0; i < prompts.length; i++)
      alone.push(await collect(engine, request(variants[i]!, prompts[i]!, 24)));
    const together = await Promise.all(prompts.map((p, i) => collect(engine, request(variants[i]!, p, 24))));
    expect(together).toEqual(alone);
    expect(alone.every((ids) => ids.length > 0)).toBe(true);
    // The pruned variant really computes something else.
    expect(await collect(engine, request('m', prompts[0]!, 24))).not.toEqual(alone[0]);
  });

  it('cancelling 100 in-flight sequences at random points frees every slot; the next request runs', async () => {
    let seed = 7;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const runs = Array.from({ length: 100 }, async (_, i) => {
      const controller = new AbortController();
      const abortAfter = Math.floor(random() * 12);
      if (abortAfter === 0) controller.abort();
      let seen = 0;
      try {
        for await (const event of engine.generate(
          request(i % 2 ? 'm' : 'm:attn-1', promptOf(i, 3 + (i % 9), 300), 40),
          controller.signal,
        )) {
          if (event.type === 'token' && ++seen >= abortAfter) controller.abort();
          if (event.type === 'finish') return event.reason;
        }
      } catch (e) {
        return (e as Error).name;
      }
      return 'ended';
    });
    const reasons = await Promise.all(runs);
    expect(reasons.filter((r) => r === 'abort').length).toBeGreaterThan(50);
    for (const v of engine.variants()) {
      expect(v.requestsRunning).toBe(0);
      expect(v.requestsWaiting).toBe(0);
      expect(v.kvCacheBytesUsed).toBe(0);
    }
    expect(await collect(engine, request('m', [1, 5, 6], 8))).toHaveLength(8);
  });
});

describe('admission', () => {
  it('a full queue rejects at once with DS_OVERLOADED; everything admitted completes', async () => {
    const engine = await createEngine({ model: smallModel(), servedModelName: 'm', maxQueue: 2 });
    try {
      const outcomes = await Promise.all(
        Array.from({ length: 12 }, async (_, i) => {
          const started = performance.now();
          try {
            const ids = await collect(engine, request('m', promptOf(i, 6, 300), 16));
            return { ok: true, length: ids.length, ms: performance.now() - started };
          } catch (e) {
            return { ok: false, code: (e as DropserveError).code, ms: performance.now() - started };
          }
        }),
      );
      const rejected = outcomes.filter((o) => !o.ok);
      const accepted = outcomes.filter((o) => o.ok);
      expect(rejected.length).toBeGreaterThan(0);
      expect(rejected.every((o) => o.code === 'DS_OVERLOADED')).toBe(true);
      expect(accepted.every((o) => o.length === 16)).toBe(true);
      // Rejections come before any model run finishes a request.
      expect(Math.max(...rejected.map((o) => o.ms))).toBeLessThan(Math.min(...accepted.map((o) => o.ms)));
    } finally {
      await engine.close();
    }
  });

  it('typed errors carry the numbers: context overflow, empty prompt, unknown model', async () => {
    const engine = await createEngine({ model: smallModel(), servedModelName: 'm' });
    try {
      const failure = async (req: GenerateRequest): Promise<DropserveError> => {
        try {
          await collect(engine, req);
        } catch (e) {
          return e as DropserveError;
        }
        throw new Error('expected a failure');
      };
      const overflow = await failure(request('m', promptOf(1, 300, 300), 4));
      expect(overflow.code).toBe('DS_CONTEXT_OVERFLOW');
      expect(overflow.message).toContain("prompt has 300 tokens; this model's context is 256");
      const tooLong = await failure(request('m', promptOf(1, 200, 300), 100));
      expect(tooLong.code).toBe('DS_CONTEXT_OVERFLOW');
      expect(tooLong.message).toContain("300 tokens exceed this model's context of 256");
      expect((await failure(request('m', [], 4))).code).toBe('DS_INVALID_ARGUMENT');
      const unknown = await failure(request('nope', [1, 2], 4));
      expect(unknown.code).toBe('DS_NOT_FOUND');
      expect(unknown.message).toContain('m');
    } finally {
      await engine.close();
    }
  });
});

/** Highest number of sequences running at once when `count` requests arrive together. */
async function peakConcurrency(engine: InProcessEngine, variant: string, count: number, worstCase: number) {
  let peak = 0;
  const promptLength = 8;
  await Promise.all(
    Array.from({ length: count }, async (_, i) => {
      for await (const event of engine.generate({
        ...request(variant, promptOf(i, promptLength, 300), worstCase - promptLength),
        ignoreEos: true,
      })) {
        if (event.type === 'token') {
          const running = engine.variants().find((v) => v.id === variant)!.requestsRunning;
          peak = Math.max(peak, running);
        }
      }
    }),
  );
  return peak;
}

describe('KV memory (worst-case admission): a budget of N full sequences admits N·L/kept of a pruned variant', () => {
  it('synthetic model (4 layers, 2 attention layers dropped → 2×)', async () => {
    const model = smallModel();
    const worstCase = 48;
    const fullBytesPerToken = 2 * 4 * model.config.numKvHeads * model.config.headDim * 4;
    const n = 3;
    const engine = await createEngine({
      model,
      servedModelName: 'm',
      kvCacheBytes: n * worstCase * fullBytesPerToken,
      kvAdmission: 'worst-case',
      kvBlockTokens: 8,
      variants: [{ name: 'attn-2', spec: { dropAttention: [1, 2], dropMlp: [] } }],
    });
    try {
      expect(await peakConcurrency(engine, 'm', 12, worstCase)).toBe(n);
      expect(await peakConcurrency(engine, 'm:attn-2', 12, worstCase)).toBe((n * 4) / 2);
    } finally {
      await engine.close();
    }
  });

  it('stories260K (5 layers, 4 attention layers dropped → 5×)', async () => {
    const { config, weights } = loadLlama2cCheckpoint(STORIES_260K);
    const model: LoadedModel = {
      config,
      weights,
      tokenizer: new ByteTokenizer(config.vocabSize),
      source: { kind: 'llama2c', id: 'stories260K', description: 'stories260K' },
    };
    const worstCase = 40;
    const fullBytesPerToken = 2 * 5 * config.numKvHeads * config.headDim * 4;
    const n = 2;
    const engine = await createEngine({
      model,
      servedModelName: 'stories260K',
      kvCacheBytes: n * worstCase * fullBytesPerToken,
      kvAdmission: 'worst-case',
      kvBlockTokens: 8,
      variants: [{ name: 'attn-4', spec: { dropAttention: [0, 1, 2, 3], dropMlp: [] } }],
    });
    try {
      expect(await peakConcurrency(engine, 'stories260K', 8, worstCase)).toBe(n);
      expect(await peakConcurrency(engine, 'stories260K:attn-4', 16, worstCase)).toBe(n * 5);
    } finally {
      await engine.close();
    }
  });
});

describe('scoring', () => {
  it('a background score (fed in chunks between rounds) equals the one-pass interactive score', async () => {
    const engine = await createEngine({
      model: smallModel(),
      servedModelName: 'm',
      variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
    });
    try {
      const tokens = promptOf(3, 150, 300);
      for (const variant of ['m', 'm:attn-1']) {
        const score = (priority: 'interactive' | 'background') =>
          engine.score({
            requestId: `s-${priority}`,
            variant,
            tokenIds: tokens,
            fromIndex: 20,
            priority,
            returnDistributions: true,
          });
        // Decode traffic alongside the background score, so it is interleaved with real rounds.
        const traffic = Promise.all(
          [1, 2, 3].map((i) => collect(engine, request(variant, promptOf(i, 8, 300), 30))),
        );
        const [oneShot, chunked] = await Promise.all([score('interactive'), score('background')]);
        await traffic;
        expect(chunked.tokenLogprobs).toHaveLength(150 - 20);
        expect(chunked.argmaxIds).toEqual(oneShot.argmaxIds);
        for (const [i, lp] of chunked.tokenLogprobs.entries()) {
          expect(Math.abs(lp - oneShot.tokenLogprobs[i]!)).toBeLessThan(1e-4);
        }
        expect(Math.abs(chunked.distributions![129]![7]! - oneShot.distributions![129]![7]!)).toBeLessThan(
          1e-4,
        );
      }
    } finally {
      await engine.close();
    }
  });
});
