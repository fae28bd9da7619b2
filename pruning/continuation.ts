/**
 * The continuation protocol, run the way the server runs it. A text is cut into a prompt and a
 * continuation; the continuation is scored teacher-forced.
 *
 *   static plan   the whole text runs under the plan's mask (the server prefills a static
 *                 variant's prompt pruned too).
 *   adaptive      the prompt runs through the full model, whose hidden states choose the drops (the
 *                 engine core's own functions); the first continuation token is predicted by that
 *                 full-model prefill, the rest by one run under the chosen drops whose past is the
 *                 prompt's K/V of the kept attention layers only. Exactly what the engine stores
 *                 and decodes from, so the offline numbers are the served ones.
 */
import type { ForwardInput, SublayerMask } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import {
  type AdaptiveSpec,
  chooseAdaptiveDrops,
  type SublayerInfluence,
  sublayerInfluence,
} from '../engine/plan/adaptive-mask.ts';
import { type DropSpec, maskOf } from '../engine/plan/plan.ts';

/** The prompt after a full-model prefill: what the engine keeps of it. */
export interface PromptPrefill {
  tokens: number[];
  /** Per layer, the prompt's K and V as a past input: [1, kvH, P, D]. */
  keys: Float32Array[];
  values: Float32Array[];
  /** Logits at the prompt's last position: they predict the first continuation token. */
  lastLogits: Float32Array;
  influence: SublayerInfluence;
}

/** Runs `prompt` through the full model (the session must have hidden states). */
export async function prefillFull(session: ModelSession, prompt: number[]): Promise<PromptPrefill> {
  const { numLayers, dim, numKvHeads, headDim } = session.config;
  const full = maskOf({ dropAttention: [], dropMlp: [] }, numLayers);
  const output = await session.run({
    ...runOver(full, prompt, 0, 0, []),
    logitsIndex: [prompt.length - 1],
    wantHiddenStates: true,
  });
  const toPast = (rows: Float32Array | null): Float32Array =>
    headsFirst(rows!, prompt.length, numKvHeads, headDim);
  return {
    tokens: prompt,
    keys: output.newKeys.map(toPast),
    values: output.newValues.map(toPast),
    lastLogits: output.logits,
    influence: sublayerInfluence(output.hiddenStates!, 0, prompt.length, dim, numLayers),
  };
}

/** The drops an adaptive variant chooses for a prefilled prompt. */
export function adaptiveDrops(prefill: PromptPrefill, spec: AdaptiveSpec): DropSpec {
  return chooseAdaptiveDrops(prefill.influence, spec);
}

/**
 * Logits predicting continuation[1..] under `drops`, with the prefilled prompt's kept layers as past:
 * one run over continuation[0 .. n−2]. Row i predicts continuation[i + 1].
 */
export async function continueUnder(
  session: ModelSession,
  prefill: PromptPrefill,
  continuation: number[],
  drops: DropSpec,
): Promise<Float32Array> {
  if (continuation.length < 2) return new Float32Array(0);
  const mask = maskOf(drops, session.config.numLayers);
  const fed = continuation.slice(0, -1);
  const P = prefill.tokens.length;
  const past = mask.attnKeep.map((keep, l) =>
    keep ? { key: prefill.keys[l]!, value: prefill.values[l]! } : null,
  );
  const output = await session.run({
    ...runOver(mask, fed, P, P, past),
    logitsIndex: fed.map((_, i) => i),
  });
  return output.logits;
}

/** Logits predicting tokens[from ..] with the whole text under one mask (a static variant). */
export async function teacherForced(
  session: ModelSession,
  tokens: number[],
  from: number,
  mask: SublayerMask,
): Promise<Float32Array> {
  const fed = tokens.slice(0, -1);
  const output = await session.run({
    ...runOver(mask, fed, 0, 0, []),
    logitsIndex: Array.from({ length: tokens.length - from }, (_, i) => from - 1 + i),
  });
  return output.logits;
}

/** An adaptive variant's logits predicting tokens[promptLength ..], and the drops it chose. */
export async function adaptiveContinuation(
  session: ModelSession,
  tokens: number[],
  promptLength: number,
  spec: AdaptiveSpec,
): Promise<{ logits: Float32Array; drops: DropSpec }> {
  const prefill = await prefillFull(session, tokens.slice(0, promptLength));
  const drops = adaptiveDrops(prefill, spec);
  const rest = await continueUnder(session, prefill, tokens.slice(promptLength), drops);
  const logits = new Float32Array(prefill.lastLogits.length + rest.length);
  logits.set(prefill.lastLogits);
  logits.set(rest, prefill.lastLogits.length);
  return { logits, drops };
}

/** [S, kvH·D] rows of one sequence → [kvH, S, D], the graph's past layout (batch of one). */
export function headsFirst(
  rows: Float32Array,
  seqLen: number,
  numKvHeads: number,
  headDim: number,
): Float32Array {
  const out = new Float32Array(rows.length);
  const kvDim = numKvHeads * headDim;
  for (let s = 0; s < seqLen; s++) {
    for (let h = 0; h < numKvHeads; h++) {
      const from = s * kvDim + h * headDim;
      out.set(rows.subarray(from, from + headDim), (h * seqLen + s) * headDim);
    }
  }
  return out;
}

/** One row of `tokens` at positions start.., over a past of `pastLength` tokens (past null = dropped). */
function runOver(
  mask: SublayerMask,
  tokens: number[],
  start: number,
  pastLength: number,
  past: ({ key: Float32Array; value: Float32Array } | null)[],
): Omit<ForwardInput, 'logitsIndex'> {
  const empty = { key: new Float32Array(0), value: new Float32Array(0) };
  return {
    batchSize: 1,
    seqLen: tokens.length,
    inputIds: tokens,
    positionIds: tokens.map((_, i) => start + i),
    mask,
    pastLengths: [pastLength],
    past: mask.attnKeep.map((keep, l) => (keep ? (past[l] ?? empty) : null)),
    pastCapacity: pastLength,
  };
}
