import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateRequest, totalPrefixReusedTokens } from '../engine/client.ts';
import { createEngine, type InProcessEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { syntheticModel, TINY_SYNTHETIC_SHAPE } from '../engine/model/synthetic.ts';
import { generatedTokenIds } from '../engine/output/token-ids.ts';
import { STORIES_260K } from './support/shared-assets.ts';

/**
 * Prefix reuse (EngineCoreOptions.prefixReuse): a sequence whose prompt shares a long prefix with a
 * running sequence of the same variant copies that prefix's KV and prefills only the rest. Greedy
 * output must equal the same requests with reuse off, token for token.
 */
const GREEDY = { ...DEFAULT_SAMPLING, temperature: 0 };
const PRUNED = { name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } };
const SYSTEM_TOKENS = 40;

let nextId = 0;
function request(variant: string, promptTokenIds: number[], maxTokens: number): GenerateRequest {
  // EOS ignored: donors must not stop early, or which requests find a donor would depend on the model.
  return { requestId: `p${nextId++}`, variant, promptTokenIds, maxTokens, sampling: GREEDY, ignoreEos: true };
}

function collect(engine: InProcessEngine, req: GenerateRequest, signal?: AbortSignal): Promise<number[]> {
  return generatedTokenIds(engine.generate(req, signal));
}

/** A 40-token "system prompt" shared by every request, then a question starting with a distinct token. */
function prompts(count: number, vocab: number): number[][] {
  const system = [
    1,
    ...Array.from({ length: SYSTEM_TOKENS - 1 }, (_, i) => 3 + ((i * 37 + 11) % (vocab - 3))),
  ];
  return Array.from({ length: count }, (_, q) => [
    ...system,
    3 + q,
    ...Array.from({ length: 4 + ((q * 5) % 9) }, (_, i) => 3 + ((q * 97 + i * 13 + 7) % (vocab - 3))),
  ]);
}

function reusedOf(engine: InProcessEngine, variant: string): number | undefined {
  return engine.variants().find((v) => v.id === variant)?.prefixReusedTokens;
}

function suite(label: string, model: () => Promise<LoadedModel>): void {
  describe(label, () => {
    let off: InProcessEngine;
    let on: InProcessEngine;
    let vocab = 0;
    beforeAll(async () => {
      const loaded = await model();
      vocab = loaded.config.vocabSize;
      off = await createEngine({ model: loaded, servedModelName: 'm', variants: [PRUNED] });
      on = await createEngine({
        model: loaded,
        servedModelName: 'm',
        variants: [PRUNED],
        prefixReuse: { minPrefixTokens: 16 },
      });
    });
    afterAll(async () => {
      await off?.close();
      await on?.close();
    });

    it('concurrent requests sharing a 40-token system prompt, full and pruned: same greedy tokens as without reuse', async () => {
      const ps = prompts(8, vocab);
      const variants = ps.map((_, i) => (i % 2 ? 'm:attn-1' : 'm'));
      const expected = await Promise.all(ps.map((p, i) => collect(off, request(variants[i]!, p, 16))));
      const before = on.core.prefixReusedTokens;
      const actual = await Promise.all(ps.map((p, i) => collect(on, request(variants[i]!, p, 16))));
      expect(actual).toEqual(expected);
      expect(actual.every((ids) => ids.length === 16)).toBe(true);
      // The first request of each variant computes its prompt; the other three reuse 40 tokens each.
      expect(on.core.prefixReusedTokens - before).toBe(2 * 3 * SYSTEM_TOKENS);
      expect(totalPrefixReusedTokens(on.variants())).toBe(on.core.prefixReusedTokens);
      expect(reusedOf(off, 'm')).toBeUndefined();
      expect(off.core.prefixReusedTokens).toBe(0);
    });

    it('a donor that finishes after lending its prefix leaves the receivers intact', async () => {
      const ps = prompts(4, vocab);
      const expected = await Promise.all(ps.map((p, i) => collect(off, request('m', p, i === 0 ? 2 : 24))));
      const before = reusedOf(on, 'm')!;
      // Donor 0 stops after 2 tokens: its row is removed and the receivers' rows move under it.
      const finished = await Promise.all(ps.map((p, i) => collect(on, request('m', p, i === 0 ? 2 : 24))));
      expect(finished).toEqual(expected);
      expect(reusedOf(on, 'm')! - before).toBe(3 * SYSTEM_TOKENS);
    });

    it('a donor aborted as soon as a receiver has its first token: receivers match reuse off', async () => {
      const ps = prompts(3, vocab);
      const expected = await Promise.all(ps.slice(1).map((p) => collect(off, request('m', p, 20))));
      const before = reusedOf(on, 'm')!;
      const donor = new AbortController();
      const donorRun = collect(on, request('m', ps[0]!, 200), donor.signal).catch(() => []);
      const receivers = ps.slice(1).map(async (p) => {
        const ids: number[] = [];
        for await (const event of on.generate(request('m', p, 20))) {
          if (event.type !== 'token') continue;
          ids.push(event.tokenId);
          donor.abort();
        }
        return ids;
      });
      expect(await Promise.all(receivers)).toEqual(expected);
      expect((await donorRun).length).toBeLessThan(200);
      expect(reusedOf(on, 'm')! - before).toBe(2 * SYSTEM_TOKENS);
    });

    it('an identical prompt reuses n−1 tokens; a prefix below minPrefixTokens is not reused', async () => {
      const [p] = prompts(1, vocab);
      const short = [...p!.slice(0, 10), ...p!.slice(10).map((t) => 3 + ((t + 1) % (vocab - 3)))];
      const expected = await Promise.all([p!, p!, short].map((q) => collect(off, request('m', q, 12))));
      const before = reusedOf(on, 'm')!;
      const actual = await Promise.all([p!, p!, short].map((q) => collect(on, request('m', q, 12))));
      expect(actual).toEqual(expected);
      expect(reusedOf(on, 'm')! - before).toBe(p!.length - 1);
    });

    it('no reuse across variants with different drop masks', async () => {
      const [p] = prompts(1, vocab);
      const before = on.core.prefixReusedTokens;
      const expected = await Promise.all(['m', 'm:attn-1'].map((v) => collect(off, request(v, p!, 8))));
      const actual = await Promise.all(['m', 'm:attn-1'].map((v) => collect(on, request(v, p!, 8))));
      expect(actual).toEqual(expected);
      expect(actual[0]).not.toEqual(actual[1]);
      expect(on.core.prefixReusedTokens).toBe(before);
    });
  });
}

suite('prefix reuse, synthetic model', async () => syntheticModel(TINY_SYNTHETIC_SHAPE));
describe('stories260K', () => {
  suite('prefix reuse, stories260K', () => loadModel({ model: STORIES_260K }));
});
