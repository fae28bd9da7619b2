/** Test support: the same prefill + greedy decode through the graph and through the reference. */
import type { ModelConfig } from '../../model/config.ts';
import type { ModelWeights } from '../../model/weights.ts';
import { fullMask, ReferenceModel } from '../../reference/forward.ts';
import type { SublayerMask } from '../io.ts';
import type { ModelSession } from '../model-session.ts';
import { argmax, JsKvCache, maxAbsDiff, runAndCache } from './js-kv-cache.ts';

export interface DecodeComparison {
  /** Largest |graph − reference| over every logit of the prompt and every decode step. */
  maxLogitDiff: number;
  /** Tokens fed after the prompt (the reference's greedy picks). */
  tokens: number[];
  /** The graph's own greedy pick at each of those steps. */
  graphPicks: number[];
}

/**
 * Prefills `prompt` as one run, then decodes `steps` tokens one run each, feeding both models the
 * reference's greedy token so the two see identical inputs.
 */
export interface DecodeCase {
  prompt: number[];
  steps: number;
  mask: SublayerMask;
  /** Mask of the reference when it should differ from the graph's (to show a mismatch is caught). */
  referenceMask?: SublayerMask;
  /** KV capacity of the JS cache; above the sequence length, as a serving runtime allocates. */
  capacity?: number;
}

export async function compareDecode(
  session: ModelSession,
  config: ModelConfig,
  weights: ModelWeights,
  { prompt, steps, mask, referenceMask = mask, capacity = prompt.length + steps + 5 }: DecodeCase,
): Promise<DecodeComparison> {
  const reference = new ReferenceModel(config, weights);
  const cache = new JsKvCache(config, 1, capacity, mask.attnKeep);
  let graphLogits = await runAndCache(session, cache, [prompt], mask);
  let refLogits = reference.forward(prompt, referenceMask);
  let maxLogitDiff = Math.max(...graphLogits.map((g, i) => maxAbsDiff(g, refLogits[i]!)));
  const tokens: number[] = [];
  const graphPicks: number[] = [];
  for (let step = 0; step < steps; step++) {
    const token = argmax(refLogits[refLogits.length - 1]!);
    tokens.push(token);
    graphPicks.push(argmax(graphLogits[graphLogits.length - 1]!));
    graphLogits = await runAndCache(session, cache, [[token]], mask);
    refLogits = reference.forward([token], referenceMask);
    maxLogitDiff = Math.max(maxLogitDiff, maxAbsDiff(graphLogits[0]!, refLogits[0]!));
  }
  return { maxLogitDiff, tokens, graphPicks };
}

/**
 * Largest logit difference of two sessions fed the same tokens: a prefill of `prompt`, then `steps`
 * greedy decode steps on session a's picks, each session with its own full-model KV cache.
 */
export async function compareSessions(
  a: ModelSession,
  b: ModelSession,
  config: ModelConfig,
  prompt: number[],
  steps: number,
): Promise<number> {
  const mask = fullMask(config.numLayers);
  const capacity = prompt.length + steps + 4;
  const cacheA = new JsKvCache(config, 1, capacity, mask.attnKeep);
  const cacheB = new JsKvCache(config, 1, capacity, mask.attnKeep);
  let logitsA = await runAndCache(a, cacheA, [prompt], mask);
  let logitsB = await runAndCache(b, cacheB, [prompt], mask);
  let max = 0;
  for (let step = 0; ; step++) {
    logitsA.forEach((row, i) => {
      max = Math.max(max, maxAbsDiff(row, logitsB[i]!));
    });
    if (step === steps) return max;
    const next = argmax(logitsA.at(-1)!);
    logitsA = await runAndCache(a, cacheA, [[next]], mask);
    logitsB = await runAndCache(b, cacheB, [[next]], mask);
  }
}
