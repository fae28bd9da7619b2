import type { SamplingParams } from '../client.ts';
import { SeededRandom } from '../model/random.ts';
import { argmax, logSoftmax, tokenLogprob, topKIndices } from './log-softmax.ts';

/**
 * Token sampling as pure functions of (logits, params, state): the random stream is an explicit
 * seeded value, so seeded runs reproduce exactly and greedy runs match byte for byte.
 *
 * Order (as vLLM): repetition penalty on prompt+output tokens, presence/frequency penalties on output
 * tokens, temperature, then top-k, top-p and min-p filters, then one draw. Logprobs are reported from
 * the model's raw distribution, like OpenAI's.
 */
export interface SamplerState {
  rng: SeededRandom;
  /** Output token counts (presence/frequency penalties). */
  outputCounts: Map<number, number>;
  /** Prompt + output tokens seen (repetition penalty). */
  seen: Set<number>;
}

export function createSamplerState(params: SamplingParams, promptTokenIds: readonly number[]): SamplerState {
  const seed = params.seed ?? Math.floor(Math.random() * 2 ** 32);
  return { rng: new SeededRandom(seed), outputCounts: new Map(), seen: new Set(promptTokenIds) };
}

export function recordToken(state: SamplerState, tokenId: number): void {
  state.outputCounts.set(tokenId, (state.outputCounts.get(tokenId) ?? 0) + 1);
  state.seen.add(tokenId);
}

export interface SampledToken {
  tokenId: number;
  logprob?: number;
  topLogprobs?: { tokenId: number; logprob: number }[];
  /** Full log-softmax row (shadow scoring). */
  distribution?: Float32Array;
}

export interface SampleOptions {
  wantLogprob?: boolean;
  topLogprobs?: number;
  wantDistribution?: boolean;
}

const GREEDY_TEMPERATURE = 1e-5;

export function sampleToken(
  rawLogits: Float32Array,
  params: SamplingParams,
  state: SamplerState,
  options: SampleOptions = {},
): SampledToken {
  const logits = applyPenalties(rawLogits, params, state);
  const tokenId =
    params.temperature < GREEDY_TEMPERATURE ? argmax(logits) : drawFiltered(logits, params, state.rng);
  const result: SampledToken = { tokenId };
  const k = options.topLogprobs ?? 0;
  if (options.wantDistribution || k > 0) {
    const logprobs = logSoftmax(rawLogits);
    result.logprob = logprobs[tokenId]!;
    if (k > 0)
      result.topLogprobs = topKIndices(logprobs, k).map((id) => ({ tokenId: id, logprob: logprobs[id]! }));
    if (options.wantDistribution) result.distribution = logprobs;
  } else if (options.wantLogprob) {
    result.logprob = tokenLogprob(rawLogits, tokenId);
  }
  recordToken(state, tokenId);
  return result;
}

function applyPenalties(raw: Float32Array, params: SamplingParams, state: SamplerState): Float32Array {
  const hasRepetition = params.repetitionPenalty !== 1 && state.seen.size > 0;
  const hasOutputPenalty =
    (params.presencePenalty !== 0 || params.frequencyPenalty !== 0) && state.outputCounts.size > 0;
  if (!hasRepetition && !hasOutputPenalty) return raw;
  const logits = Float32Array.from(raw);
  if (hasRepetition) {
    for (const id of state.seen) {
      const v = logits[id]!;
      logits[id] = v > 0 ? v / params.repetitionPenalty : v * params.repetitionPenalty;
    }
  }
  if (hasOutputPenalty) {
    for (const [id, count] of state.outputCounts) {
      logits[id] = logits[id]! - params.frequencyPenalty * count - params.presencePenalty;
    }
  }
  return logits;
}

/** Temperature, then top-k / top-p / min-p over the candidates, then one uniform draw. */
function drawFiltered(logits: Float32Array, params: SamplingParams, rng: SeededRandom): number {
  const vocab = logits.length;
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) if (logits[i]! > max) max = logits[i]!;
  const probs = new Float64Array(vocab);
  let sum = 0;
  for (let i = 0; i < vocab; i++) {
    const p = Math.exp((logits[i]! - max) / params.temperature);
    probs[i] = p;
    sum += p;
  }
  for (let i = 0; i < vocab; i++) probs[i] = probs[i]! / sum;

  const useTopK = params.topK > 0 && params.topK < vocab;
  const useTopP = params.topP < 1;
  let candidates: number[] | null = null;
  if (useTopK || useTopP) {
    // Sorting only what can survive: with top-k that is k entries, otherwise every positive prob.
    const order = Array.from({ length: vocab }, (_, i) => i).filter((i) => probs[i]! > 0);
    order.sort((a, b) => probs[b]! - probs[a]!);
    candidates = useTopK ? order.slice(0, params.topK) : order;
    if (useTopP) {
      let mass = 0;
      let keep = 0;
      const total = candidates.reduce((s, i) => s + probs[i]!, 0);
      while (keep < candidates.length) {
        mass += probs[candidates[keep]!]! / total;
        keep++;
        if (mass >= params.topP) break;
      }
      candidates = candidates.slice(0, Math.max(1, keep));
    }
  }
  if (params.minP > 0) {
    let maxProb = 0;
    for (let i = 0; i < vocab; i++) if (probs[i]! > maxProb) maxProb = probs[i]!;
    const threshold = params.minP * maxProb;
    const base = candidates ?? Array.from({ length: vocab }, (_, i) => i);
    candidates = base.filter((i) => probs[i]! >= threshold);
  }
  if (candidates === null) return drawFrom(probs, null, rng);
  return drawFrom(probs, candidates, rng);
}

function drawFrom(probs: Float64Array, candidates: number[] | null, rng: SeededRandom): number {
  const ids = candidates ?? null;
  let total = 0;
  if (ids) for (const i of ids) total += probs[i]!;
  else total = 1;
  let u = rng.next() * total;
  if (ids) {
    for (const i of ids) {
      u -= probs[i]!;
      if (u <= 0) return i;
    }
    return ids[ids.length - 1]!;
  }
  for (let i = 0; i < probs.length; i++) {
    u -= probs[i]!;
    if (u <= 0) return i;
  }
  return probs.length - 1;
}
