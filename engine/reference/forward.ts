import type { SublayerMask } from '../graph/io.ts';
import type { ModelConfig } from '../model/config.ts';
import { derivedSizes, ropeInverseFrequencies } from '../model/config.ts';
import type { LayerWeights, ModelWeights } from '../model/weights.ts';
import { attendOne } from './attention.ts';
import { emulateSublayer } from './emulation.ts';
import { linear, residual, rmsNorm, silu } from './ops.ts';
import { applyRope } from './rope.ts';

/** One kept attention layer's cache: a row per position, K after RoPE. */
export interface ReferenceKvCache {
  keys: Float64Array[]; // per position: [kvDim]
  values: Float64Array[]; // per position: [kvDim]
}

/**
 * A plain-TypeScript Llama forward pass for one sequence, written to be read and trusted rather than
 * to be fast: the answer the ONNX graph is checked against. Each instance holds one sequence's KV
 * cache; `forward` continues from the cached positions. The mask must stay the same for the
 * sequence's life, because a layer skipped earlier has no KV to attend to later.
 */
export class ReferenceModel {
  readonly config: ModelConfig;
  readonly weights: ModelWeights;
  readonly #invFreq: Float64Array;
  #kv: (ReferenceKvCache | null)[] = [];
  #numPositions = 0;
  #mask: SublayerMask | null = null;
  #hiddenStates: Float32Array[] = [];

  constructor(config: ModelConfig, weights: ModelWeights) {
    this.config = config;
    this.weights = weights;
    this.#invFreq = ropeInverseFrequencies(config);
  }

  /** Positions already in the cache. */
  get numPositions(): number {
    return this.#numPositions;
  }

  /**
   * Residual stream of the last `forward` call, [2L+1] of [S, dim]: index 0 is the embedding,
   * 2l+1 after attention l, 2l+2 after MLP l (as engine/graph/io.ts numbers them).
   */
  get hiddenStates(): readonly Float32Array[] {
    return this.#hiddenStates;
  }

  /** The KV cache of a layer, or null when its attention is dropped. */
  kvCache(layer: number): ReferenceKvCache | null {
    return this.#kv[layer] ?? null;
  }

  /** Forget the sequence: empty cache, and the mask may change. */
  reset(): void {
    this.#kv = [];
    this.#numPositions = 0;
    this.#mask = null;
    this.#hiddenStates = [];
  }

  /** Runs the new tokens and returns the logits of each, [S] of [vocab]. */
  forward(tokenIds: readonly number[], mask: SublayerMask): Float32Array[] {
    this.#bindMask(mask);
    const { dim, numLayers } = this.config;
    const hidden = Array.from({ length: 2 * numLayers + 1 }, () => new Float32Array(tokenIds.length * dim));
    const logits: Float32Array[] = [];
    tokenIds.forEach((tokenId, s) => {
      const states = this.#forwardOne(tokenId, this.#numPositions, mask);
      states.forEach((state, k) => {
        hidden[k]!.set(state, s * dim);
      });
      logits.push(this.#logits(states[states.length - 1]!));
      this.#numPositions++;
    });
    this.#hiddenStates = hidden;
    return logits;
  }

  #bindMask(mask: SublayerMask): void {
    const { numLayers } = this.config;
    if (mask.attnKeep.length !== numLayers || mask.mlpKeep.length !== numLayers) {
      throw new RangeError(`mask must have ${numLayers} entries per sublayer kind`);
    }
    if (this.#mask === null) {
      this.#mask = mask;
      this.#kv = mask.attnKeep.map((isKept) => (isKept ? { keys: [], values: [] } : null));
      return;
    }
    const isSameAttention = mask.attnKeep.every((isKept, l) => isKept === this.#mask!.attnKeep[l]);
    if (!isSameAttention) throw new Error('attention mask changed within a sequence; call reset() first');
  }

  /** One position through every layer; returns the residual stream after each sublayer. */
  #forwardOne(tokenId: number, position: number, mask: SublayerMask): Float64Array[] {
    const { dim, rmsNormEps } = this.config;
    const embedding = this.weights.tokenEmbedding.subarray(tokenId * dim, (tokenId + 1) * dim);
    let x: Float64Array = Float64Array.from(embedding);
    const states: Float64Array[] = [x];
    this.weights.layers.forEach((layer, l) => {
      x = mask.attnKeep[l]
        ? residual(x, this.#attention(x, layer, l, position))
        : emulateSublayer(x, mask.emulation?.attention[l] ?? null, layer.attnNorm, rmsNormEps);
      states.push(x);
      x = mask.mlpKeep[l]
        ? residual(x, this.#mlp(x, layer))
        : emulateSublayer(x, mask.emulation?.mlp[l] ?? null, layer.mlpNorm, rmsNormEps);
      states.push(x);
    });
    return states;
  }

  /** o_proj(attention(rope(q), rope(k), v)) of the normed input; appends this position's K/V. */
  #attention(x: Float64Array, layer: LayerWeights, l: number, position: number): Float64Array {
    const { numHeads, numKvHeads, headDim, dim, rmsNormEps, ropeInterleaved } = this.config;
    const { qDim, kvDim } = derivedSizes(this.config);
    const h = rmsNorm(x, layer.attnNorm, rmsNormEps);
    const q = linear(h, layer.wq, qDim, layer.bq);
    const k = linear(h, layer.wk, kvDim, layer.bk);
    const v = linear(h, layer.wv, kvDim, layer.bv);
    applyRope(q, numHeads, headDim, position, this.#invFreq, ropeInterleaved);
    applyRope(k, numKvHeads, headDim, position, this.#invFreq, ropeInterleaved);
    const cache = this.#kv[l]!;
    cache.keys.push(k);
    cache.values.push(v);
    const attended = attendOne(q, cache.keys, cache.values, numHeads, numKvHeads, headDim);
    return linear(attended, layer.wo, dim);
  }

  /** SwiGLU: w2(silu(w1(x)) * w3(x)) of the normed input. */
  #mlp(x: Float64Array, layer: LayerWeights): Float64Array {
    const { dim, hiddenDim, rmsNormEps } = this.config;
    const h = rmsNorm(x, layer.mlpNorm, rmsNormEps);
    const gate = linear(h, layer.wGate, hiddenDim);
    const up = linear(h, layer.wUp, hiddenDim);
    for (let i = 0; i < hiddenDim; i++) gate[i] = silu(gate[i]!) * up[i]!;
    return linear(gate, layer.wDown, dim);
  }

  #logits(x: Float64Array): Float32Array {
    const normed = rmsNorm(x, this.weights.finalNorm, this.config.rmsNormEps);
    return Float32Array.from(linear(normed, this.weights.lmHead, this.config.vocabSize));
  }
}

/** Every sublayer kept. */
export function fullMask(numLayers: number): SublayerMask {
  return { attnKeep: Array(numLayers).fill(true), mlpKeep: Array(numLayers).fill(true) };
}

/** A mask with the listed attention and MLP layers dropped (no emulation). */
export function dropMask(
  numLayers: number,
  dropAttention: readonly number[],
  dropMlp: readonly number[] = [],
): SublayerMask {
  return {
    attnKeep: Array.from({ length: numLayers }, (_, l) => !dropAttention.includes(l)),
    mlpKeep: Array.from({ length: numLayers }, (_, l) => !dropMlp.includes(l)),
  };
}
