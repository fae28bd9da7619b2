import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type FinishEvent, type VariantInfo } from '../engine/client.ts';
import type { ForwardInput } from '../engine/graph/io.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import type { DropSpec } from '../engine/plan/plan.ts';
import { argmax } from '../engine/sampling/log-softmax.ts';
import { continueUnder, prefillFull } from '../pruning/continuation.ts';
import { residualPass } from '../pruning/residual-stats.ts';
import { lowestPerKind } from '../pruning/select.ts';
import type { CancelCountingEngine } from './support/gated-runner.ts';
import { createGatedEngine } from './support/gated-runner.ts';
import { STORIES_260K } from './support/shared-assets.ts';

/**
 * An adaptive:attn:2 variant on the trained stories260K, on a real onnxruntime session: the drops a
 * prompt gets are the two attention sublayers the pruning toolkit's own residual pass ranks lowest
 * (cosine) on that prompt alone, and every generated token is the greedy argmax of a teacher-forced
 * run that keeps the prompt's full-model KV of the kept layers as its past — the serving semantics,
 * recomputed outside the engine.
 */
const VARIANT = 'stories260K:auto';
const MAX_TOKENS = 24;
// Two openings whose prefills rank attention 3 and 4 differently (checked below, not assumed).
const PROMPT_A = 'Tom had a big red ball.';
const PROMPT_B = 'The cat sat on the mat and looked at the bird.';

describe('adaptive:attn:2 on stories260K', () => {
  let model: LoadedModel;
  let session: ModelSession;
  let engine: CancelCountingEngine;
  /** Every forward run the engine made, in order. */
  const runs: ForwardInput[] = [];

  beforeAll(async () => {
    model = await loadModel({ model: STORIES_260K });
    session = await ModelSession.create(model.config, model.weights, { outputHiddenStates: true });
    ({ engine } = await createGatedEngine(
      {
        model,
        servedModelName: 'stories260K',
        variants: [
          { name: 'auto', spec: { dropAttention: [], dropMlp: [] }, adaptive: { attention: 2, mlp: 0 } },
        ],
        kvCacheBytes: 16 * 1024 * 1024,
      },
      (input) => {
        runs.push(input);
        return false;
      },
    ));
  }, 60_000);
  afterAll(async () => {
    await engine?.close(0);
    await session?.release();
  });

  const encode = (text: string): number[] => model.tokenizer.encode(text, { addBos: true });

  async function generate(
    requestId: string,
    prompt: number[],
  ): Promise<{ ids: number[]; finish: FinishEvent }> {
    const ids: number[] = [];
    let finish: FinishEvent | undefined;
    for await (const event of engine.generate({
      requestId,
      variant: VARIANT,
      promptTokenIds: prompt,
      maxTokens: MAX_TOKENS,
      ignoreEos: true,
      sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
    })) {
      if (event.type === 'token') ids.push(event.tokenId);
      else finish = event;
    }
    return { ids, finish: finish! };
  }

  /** The toolkit's cosine metric over this prompt alone, lowest two attention sublayers. */
  async function toolkitDrops(prompt: number[]): Promise<DropSpec> {
    const { metrics } = await residualPass(session, model.weights, [{ tokens: prompt, firstScored: 1 }]);
    return lowestPerKind(metrics.cosine, { attention: 2, mlp: 0 });
  }

  /** Greedy tokens a teacher-forced run predicts: the full-model prefill, then the rest under `drops`. */
  async function teacherForcedGreedy(
    prompt: number[],
    generated: number[],
    drops: DropSpec,
  ): Promise<number[]> {
    const prefill = await prefillFull(session, prompt);
    const rest = await continueUnder(session, prefill, generated, drops);
    const vocab = model.config.vocabSize;
    return [
      argmax(prefill.lastLogits),
      ...Array.from({ length: generated.length - 1 }, (_, i) =>
        argmax(rest.subarray(i * vocab, (i + 1) * vocab)),
      ),
    ];
  }

  const variantInfo = (): VariantInfo => engine.variants().find((v) => v.id === VARIANT)!;

  it('drops what the toolkit ranks lowest on the prompt, and decodes what a teacher-forced pruned run predicts', async () => {
    const prompt = encode(PROMPT_A);
    const { ids, finish } = await generate('a', prompt);
    expect(finish.reason).toBe('length');
    expect(ids).toHaveLength(MAX_TOKENS);
    const expected = await toolkitDrops(prompt);
    expect(finish.adaptiveDrops).toEqual({ attention: expected.dropAttention, mlp: [] });
    expect(await teacherForcedGreedy(prompt, ids, expected)).toEqual(ids);
    // The full model would not have generated the same: the drops are real.
    const full = await teacherForcedGreedy(prompt, ids, { dropAttention: [], dropMlp: [] });
    expect(full).not.toEqual(ids);
    expect(variantInfo().adaptive).toEqual({ attention: 2, mlp: 0, distinctMasks: 1 });
    expect(variantInfo().kvCacheBytesUsed).toBe(0);
  });

  it('two prompts that choose different drops decode in separate batches, each as its own pruned run predicts', async () => {
    const prompts = [encode(PROMPT_A), encode(PROMPT_B)];
    const expected = await Promise.all(prompts.map(toolkitDrops));
    expect(expected[0]).not.toEqual(expected[1]);
    runs.length = 0;
    const results = await Promise.all(prompts.map((p, i) => generate(`pair-${i}`, p)));
    for (const [i, { ids, finish }] of results.entries()) {
      expect(finish.adaptiveDrops).toEqual({ attention: expected[i]!.dropAttention, mlp: [] });
      expect(await teacherForcedGreedy(prompts[i]!, ids, expected[i]!)).toEqual(ids);
    }
    // Decode runs (one new token per row) each carry one mask: a drop set's rows only.
    const dropsOf = (input: ForwardInput): number[] =>
      input.mask.attnKeep.flatMap((keep, layer) => (keep ? [] : [layer]));
    const decodes = runs.filter((r) => r.seqLen === 1);
    expect(decodes.length).toBe(2 * (MAX_TOKENS - 1));
    for (const run of decodes) expect(run.batchSize).toBe(1);
    const order = decodes.map(dropsOf).map((d) => (d.join() === expected[0]!.dropAttention.join() ? 0 : 1));
    expect(order.filter((o) => o === 0)).toHaveLength(MAX_TOKENS - 1);
    expect(order.filter((o) => o === 1)).toHaveLength(MAX_TOKENS - 1);
    // Both sequences were running at once: their decode runs alternate rather than follow one another.
    expect(order.slice(0, 4)).toEqual([0, 1, 0, 1]);
    expect(variantInfo().adaptive?.distinctMasks).toBe(2);
  });

  it('costs (L − K) / L of the full model’s KV bytes per token', () => {
    const full = engine.variants().find((v) => v.id === 'stories260K')!;
    const L = model.config.numLayers;
    expect(variantInfo().kvBytesPerToken).toBe((full.kvBytesPerToken * (L - 2)) / L);
  });
});
