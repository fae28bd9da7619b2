/**
 * Test support: drives a ModelSession the way a serving runtime does. K/V live in JS arrays of
 * layout [B, kvH, capacity, D] per kept layer; each run's fetched rows ([B, S, kvH·D]) are written
 * in, and the arrays are fed back as past with pastCapacity = capacity > length.
 */
import type { ModelConfig } from '../../model/config.ts';
import type { ForwardOutput, SublayerMask } from '../io.ts';
import type { ModelSession } from '../model-session.ts';

export class JsKvCache {
  readonly config: ModelConfig;
  readonly batchSize: number;
  readonly capacity: number;
  readonly layers: ({ key: Float32Array; value: Float32Array } | null)[];
  /** Tokens cached per row. */
  readonly lengths: number[];

  constructor(config: ModelConfig, batchSize: number, capacity: number, attnKeep: readonly boolean[]) {
    this.config = config;
    this.batchSize = batchSize;
    this.capacity = capacity;
    const size = batchSize * config.numKvHeads * capacity * config.headDim;
    // NaN fill: rows past a sequence's length must never be read.
    this.layers = attnKeep.map((isKept) =>
      isKept
        ? { key: new Float32Array(size).fill(Number.NaN), value: new Float32Array(size).fill(Number.NaN) }
        : null,
    );
    this.lengths = Array(batchSize).fill(0);
  }

  /** Writes this run's rows ([B, S, kvH·D]) at each row's current length, then advances lengths. */
  append(output: ForwardOutput, seqLen: number): void {
    const { numKvHeads, headDim } = this.config;
    this.layers.forEach((layer, l) => {
      if (!layer) return;
      for (const [rows, cache] of [
        [output.newKeys[l]!, layer.key],
        [output.newValues[l]!, layer.value],
      ] as const) {
        for (let b = 0; b < this.batchSize; b++) {
          for (let s = 0; s < seqLen; s++) {
            const pos = this.lengths[b]! + s;
            for (let h = 0; h < numKvHeads; h++) {
              const src = ((b * seqLen + s) * numKvHeads + h) * headDim;
              const dst = ((b * numKvHeads + h) * this.capacity + pos) * headDim;
              cache.set(rows.subarray(src, src + headDim), dst);
            }
          }
        }
      }
    });
    for (let b = 0; b < this.batchSize; b++) this.lengths[b]! += seqLen;
  }

  /** Copies row `from` of another cache into row `to` of this one (batching separately prefilled rows). */
  copyRowFrom(other: JsKvCache, from: number, to: number): void {
    const { numKvHeads, headDim } = this.config;
    const rowLen = other.lengths[from]!;
    this.layers.forEach((layer, l) => {
      const src = other.layers[l];
      if (!layer || !src) return;
      for (const kind of ['key', 'value'] as const) {
        for (let h = 0; h < numKvHeads; h++) {
          const s = (from * numKvHeads + h) * other.capacity * headDim;
          const d = (to * numKvHeads + h) * this.capacity * headDim;
          layer[kind].set(src[kind].subarray(s, s + rowLen * headDim), d);
        }
      }
    });
    this.lengths[to] = rowLen;
  }
}

/**
 * One run of `tokens` (B rows × S new tokens each) continuing from the cache; returns the logits of
 * every new position, [B·S] of [vocab], and appends the new K/V rows.
 */
export async function runAndCache(
  session: ModelSession,
  cache: JsKvCache,
  tokens: number[][],
  mask: SublayerMask,
): Promise<Float32Array[]> {
  const B = tokens.length;
  const S = tokens[0]!.length;
  const pastLengths = [...cache.lengths];
  const output = await session.run({
    batchSize: B,
    seqLen: S,
    inputIds: tokens.flat(),
    positionIds: tokens.flatMap((row, b) => row.map((_, s) => pastLengths[b]! + s)),
    mask,
    pastLengths,
    past: cache.layers,
    pastCapacity: cache.capacity,
    logitsIndex: Array.from({ length: B * S }, (_, i) => i),
  });
  cache.append(output, S);
  const vocab = session.config.vocabSize;
  return Array.from({ length: B * S }, (_, i) => output.logits.slice(i * vocab, (i + 1) * vocab));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`lengths differ: ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= max)) max = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return max;
}

export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
