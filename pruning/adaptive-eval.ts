/**
 * Adaptive against static dropping on the same texts, with the continuation protocol
 * (pruning/continuation.ts): each document's first `promptTokens` tokens (BOS included) are the
 * prompt and the rest is scored teacher-forced, every variant against the full model at the same
 * positions: mean ΔNLL of the true next token, top-1 agreement and KL(full ‖ variant).
 */
import type { SublayerMask } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import { type AdaptiveSpec, dropKey } from '../engine/plan/adaptive-mask.ts';
import { type DropSpec, maskOf } from '../engine/plan/plan.ts';
import { argmax, logSoftmax } from '../engine/sampling/log-softmax.ts';
import type { Tokenizer } from '../engine/tokenizer/tokenizer.ts';
import { throwIfAborted } from './batches.ts';
import { adaptiveContinuation, teacherForced } from './continuation.ts';

export const DEFAULT_PROMPT_TOKENS = 64;

/** Fidelity to the full model over the scored continuation positions. */
export interface ContinuationFidelity {
  /** Scored positions (all documents). */
  positions: number;
  /** Mean over positions of NLL(variant) − NLL(full) of the true next token, nats. */
  deltaNll: number;
  /** Mean NLL of the true next token, nats (perplexity = exp). */
  nll: number;
  /** Share of positions where the variant's top-1 is the full model's top-1. */
  agreement: number;
  /** Mean KL(full ‖ variant), nats. */
  kl: number;
}

export interface AdaptiveEvalReport {
  adaptive: AdaptiveSpec;
  promptTokens: number;
  /** Documents scored, and those skipped for having no token after the prompt. */
  documents: number;
  skippedShort: number;
  full: ContinuationFidelity;
  adaptiveFidelity: ContinuationFidelity;
  /**
   * Drop sets the prompts chose, most frequent first; on each set's own documents, the adaptive
   * variant's fidelity and that of the overall best static plan (does choosing per prompt pay where
   * it departs from the static choice?).
   */
  masks: {
    drops: DropSpec;
    documents: number;
    adaptive: ContinuationFidelity;
    bestStatic: ContinuationFidelity;
  }[];
  /** Static plans compared (same number of drops of each kind), lowest ΔNLL first. */
  static: { drops: DropSpec; fidelity: ContinuationFidelity }[];
}

export interface AdaptiveEvalOptions {
  adaptive: AdaptiveSpec;
  promptTokens?: number;
  /** Static plans to compare with; default every plan dropping as many sublayers of each kind. */
  staticPlans?: DropSpec[];
  signal?: AbortSignal;
  onStart?: (documents: number) => void;
  onProgress?: (done: number) => void;
}

/** Above this many static plans, name one (--drop-attention / --plan) instead of trying them all. */
export const MAX_EXHAUSTIVE_PLANS = 64;

/** Every plan that drops `spec.attention` attention and `spec.mlp` MLP sublayers of L layers. */
export function allStaticPlans(spec: AdaptiveSpec, numLayers: number): DropSpec[] {
  const attention = combinations(numLayers, spec.attention);
  const mlp = combinations(numLayers, spec.mlp);
  return attention.flatMap((a) => mlp.map((m) => ({ dropAttention: a, dropMlp: m })));
}

export function countStaticPlans(spec: AdaptiveSpec, numLayers: number): number {
  return binomial(numLayers, spec.attention) * binomial(numLayers, spec.mlp);
}

export async function evaluateAdaptive(
  session: ModelSession,
  tokenizer: Tokenizer,
  documents: readonly string[],
  options: AdaptiveEvalOptions,
): Promise<AdaptiveEvalReport> {
  const { config } = session;
  const promptTokens = options.promptTokens ?? DEFAULT_PROMPT_TOKENS;
  const plans = options.staticPlans ?? allStaticPlans(options.adaptive, config.numLayers);
  const fullMask = maskOf({ dropAttention: [], dropMlp: [] }, config.numLayers);
  const staticMasks: SublayerMask[] = plans.map((p) => maskOf(p, config.numLayers));
  const full = new FidelitySum();
  const adaptive = new FidelitySum();
  const statics = plans.map(() => new FidelitySum());
  interface MaskGroup {
    drops: DropSpec;
    documents: number;
    adaptive: FidelitySum;
    statics: FidelitySum[];
  }
  const masks = new Map<string, MaskGroup>();
  let scored = 0;
  let skippedShort = 0;
  options.onStart?.(documents.length);
  for (const [i, document] of documents.entries()) {
    throwIfAborted(options.signal);
    const tokens = tokenizer.encode(document, { addBos: true }).slice(0, config.maxSeqLen);
    if (tokens.length <= promptTokens) {
      skippedShort++;
      options.onProgress?.(i + 1);
      continue;
    }
    const targets = tokens.slice(promptTokens);
    const reference = rowsOf(await teacherForced(session, tokens, promptTokens, fullMask), config.vocabSize);
    full.add(reference, reference, targets);
    const run = await adaptiveContinuation(session, tokens, promptTokens, options.adaptive);
    const adaptiveRows = rowsOf(run.logits, config.vocabSize);
    adaptive.add(reference, adaptiveRows, targets);
    const key = dropKey(run.drops);
    const group = masks.get(key) ?? {
      drops: run.drops,
      documents: 0,
      adaptive: new FidelitySum(),
      statics: plans.map(() => new FidelitySum()),
    };
    masks.set(key, group);
    group.documents++;
    group.adaptive.add(reference, adaptiveRows, targets);
    for (const [p, mask] of staticMasks.entries()) {
      const rows = rowsOf(await teacherForced(session, tokens, promptTokens, mask), config.vocabSize);
      statics[p]!.add(reference, rows, targets);
      group.statics[p]!.add(reference, rows, targets);
    }
    scored++;
    options.onProgress?.(i + 1);
  }
  const staticMeans = statics.map((sum) => sum.mean());
  const best = staticMeans.reduce((b, f, p) => (f.deltaNll < staticMeans[b]!.deltaNll ? p : b), 0);
  return {
    adaptive: options.adaptive,
    promptTokens,
    documents: scored,
    skippedShort,
    full: full.mean(),
    adaptiveFidelity: adaptive.mean(),
    masks: [...masks.values()]
      .sort((a, b) => b.documents - a.documents)
      .map((g) => ({
        drops: g.drops,
        documents: g.documents,
        adaptive: g.adaptive.mean(),
        bestStatic: g.statics[best]?.mean() ?? g.adaptive.mean(),
      })),
    static: plans
      .map((drops, p) => ({ drops, fidelity: staticMeans[p]! }))
      .sort((a, b) => a.fidelity.deltaNll - b.fidelity.deltaNll),
  };
}

/** Running sums of one variant against the full model. */
class FidelitySum {
  #positions = 0;
  #deltaNll = 0;
  #nll = 0;
  #agree = 0;
  #kl = 0;

  add(reference: Float32Array[], variant: Float32Array[], targets: number[]): void {
    targets.forEach((target, i) => {
      const f = reference[i]!;
      const v = variant[i]!;
      this.#nll -= v[target]!;
      this.#deltaNll += f[target]! - v[target]!;
      if (argmax(f) === argmax(v)) this.#agree++;
      let kl = 0;
      for (let t = 0; t < f.length; t++) {
        const p = Math.exp(f[t]!);
        if (p > 0) kl += p * (f[t]! - v[t]!);
      }
      this.#kl += kl;
      this.#positions++;
    });
  }

  mean(): ContinuationFidelity {
    const n = Math.max(1, this.#positions);
    return {
      positions: this.#positions,
      deltaNll: this.#deltaNll / n,
      nll: this.#nll / n,
      agreement: this.#agree / n,
      kl: this.#kl / n,
    };
  }
}

/** Logits [N, vocab] → N log-softmax rows. */
function rowsOf(logits: Float32Array, vocab: number): Float32Array[] {
  return Array.from({ length: logits.length / vocab }, (_, i) =>
    logSoftmax(logits.subarray(i * vocab, (i + 1) * vocab)),
  );
}

function combinations(n: number, k: number): number[][] {
  if (k === 0) return [[]];
  const out: number[][] = [];
  const walk = (start: number, chosen: number[]): void => {
    if (chosen.length === k) {
      out.push([...chosen]);
      return;
    }
    for (let i = start; i < n; i++) walk(i + 1, [...chosen, i]);
  };
  walk(0, []);
  return out;
}

function binomial(n: number, k: number): number {
  let result = 1;
  for (let i = 0; i < k; i++) result = (result * (n - i)) / (i + 1);
  return Math.round(result);
}
