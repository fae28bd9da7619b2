import type { DropSpec } from './plan.ts';

/**
 * Input-adaptive dropping: how many of a prompt's least influential sublayers a sequence decodes
 * without. `--variant NAME=adaptive:attn:K[,mlp:M]`.
 */
export interface AdaptiveSpec {
  attention: number;
  mlp: number;
}

/** Influence per sublayer: 1 − mean cos(x_in, x_out) of the residual stream (the toolkit's cosine metric). */
export interface SublayerInfluence {
  attention: number[];
  mlp: number[];
}

/**
 * The cosine metric of the pruning toolkit over one sequence's positions, from a run's hidden_<k>
 * outputs ([B, S, dim] each, k = 0 the embedding, 2l+1 after attention l, 2l+2 after MLP l): the
 * prefill that serves the prompt measures it, so choosing a mask costs no extra pass.
 */
export function sublayerInfluence(
  hiddenStates: readonly Float32Array[],
  row: number,
  seqLen: number,
  dim: number,
  numLayers: number,
): SublayerInfluence {
  const influence: SublayerInfluence = { attention: [], mlp: [] };
  for (let k = 1; k <= 2 * numLayers; k++) {
    const xIn = hiddenStates[k - 1]!;
    const xOut = hiddenStates[k]!;
    let cosSum = 0;
    for (let s = 0; s < seqLen; s++) {
      const offset = (row * seqLen + s) * dim;
      let dot = 0;
      let inSq = 0;
      let outSq = 0;
      for (let d = 0; d < dim; d++) {
        const a = xIn[offset + d]!;
        const b = xOut[offset + d]!;
        dot += a * b;
        inSq += a * a;
        outSq += b * b;
      }
      // A zero vector has no direction: unchanged if both are zero, orthogonal otherwise.
      cosSum +=
        inSq > 0 && outSq > 0
          ? Math.min(1, Math.max(-1, dot / Math.sqrt(inSq * outSq)))
          : inSq === outSq
            ? 1
            : 0;
    }
    const value = 1 - cosSum / seqLen;
    const layer = (k - 1) >> 1;
    if (k % 2 === 1) influence.attention[layer] = value;
    else influence.mlp[layer] = value;
  }
  return influence;
}

/** The K least influential attention and M least influential MLP sublayers (ties: the lower layer). */
export function chooseAdaptiveDrops(influence: SublayerInfluence, spec: AdaptiveSpec): DropSpec {
  const lowest = (scores: number[], count: number): number[] =>
    scores
      .map((score, layer) => ({ score, layer }))
      .sort((a, b) => a.score - b.score || a.layer - b.layer)
      .slice(0, count)
      .map(({ layer }) => layer)
      .sort((a, b) => a - b);
  return {
    dropAttention: lowest(influence.attention, spec.attention),
    dropMlp: lowest(influence.mlp, spec.mlp),
  };
}

/** A stable key of a drop set: sequences with the same key decode in one batch. */
export function dropKey(spec: DropSpec): string {
  return `attn:${spec.dropAttention.join(',')};mlp:${spec.dropMlp.join(',')}`;
}

/** Parses "adaptive:attn:K", "adaptive:mlp:M", "adaptive:attn:K,mlp:M"; null when not adaptive. */
export function parseAdaptiveSpec(text: string, numLayers: number): AdaptiveSpec | null {
  const match = /^adaptive:(.+)$/.exec(text.trim());
  if (!match) return null;
  const spec: AdaptiveSpec = { attention: 0, mlp: 0 };
  for (const part of match[1]!.split(',')) {
    const [kind, count] = part.trim().split(':');
    const n = Number(count);
    if ((kind !== 'attn' && kind !== 'mlp') || !Number.isInteger(n) || n < 0) {
      throw new RangeError(`"${text}": expected adaptive:attn:K, adaptive:mlp:M or adaptive:attn:K,mlp:M`);
    }
    if (n >= numLayers) {
      throw new RangeError(`"${text}": ${kind}:${n} would drop every layer; this model has ${numLayers}`);
    }
    spec[kind === 'attn' ? 'attention' : 'mlp'] = n;
  }
  if (spec.attention + spec.mlp === 0) throw new RangeError(`"${text}": drops nothing`);
  return spec;
}
