/**
 * Runs many independent sequences through a ModelSession in few runs. Rows of one run share a
 * length S: shorter rows are right-padded, which is exact under causal attention — a position never
 * sees the padding after it — so padded positions are simply not read. Sequences are sorted by
 * length first so that rows of one run are of similar length and little padding is computed.
 */
import { DropserveError } from '../engine/errors.ts';
import type { SublayerMask } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';

/** Default cap on B·S tokens per run: big enough to amortise a run, small enough for the cache. */
export const DEFAULT_MAX_BATCH_TOKENS = 2048;

export interface BatchRun {
  /** Indices into the caller's sequence list, one per row. */
  rows: number[];
  seqLen: number; // S
  /** [N, vocab] logits of the positions asked for, in the order of `positions`. */
  logits: Float32Array;
  /** Per row, the positions whose logits were fetched (ascending), index into `logits` by order. */
  positions: number[][];
  /** [2L+1] of [B, S, dim] when hidden states were asked for. */
  hiddenStates?: Float32Array[];
}

export interface BatchOptions {
  maxBatchTokens?: number;
  /** Positions of sequence i whose logits are wanted (default: none). */
  logitPositions?: (index: number) => number[];
  wantHiddenStates?: boolean;
  signal?: AbortSignal;
}

/** Groups indices of sequences (by length) into runs of at most maxBatchTokens padded tokens. */
export function planBatches(lengths: readonly number[], maxBatchTokens: number): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const batches: number[][] = [];
  let current: number[] = [];
  for (const i of order) {
    // Longest first, so the first row of a batch fixes its padded length.
    const seqLen = current.length > 0 ? lengths[current[0]!]! : lengths[i]!;
    if (current.length > 0 && (current.length + 1) * seqLen > maxBatchTokens) {
      batches.push(current);
      current = [];
    }
    current.push(i);
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/** Throws DS_CANCELLED once the signal has fired (checked between runs). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new DropserveError('DS_CANCELLED', 'interrupted');
}

/** Runs every sequence with one mask; calls `onRun` once per run, in run order. */
export async function runBatches(
  session: ModelSession,
  sequences: readonly (readonly number[])[],
  mask: SublayerMask,
  options: BatchOptions,
  onRun: (run: BatchRun) => void,
): Promise<void> {
  const maxBatchTokens = options.maxBatchTokens ?? DEFAULT_MAX_BATCH_TOKENS;
  const { numLayers } = session.config;
  // Kept layers get an empty past (pastCapacity 0: every row starts fresh); dropped layers null.
  const emptyPast = { key: new Float32Array(0), value: new Float32Array(0) };
  const past = mask.attnKeep.map((isKept) => (isKept ? emptyPast : null));
  for (const rows of planBatches(
    sequences.map((s) => s.length),
    maxBatchTokens,
  )) {
    throwIfAborted(options.signal);
    const seqLen = Math.max(...rows.map((i) => sequences[i]!.length));
    const inputIds = new Int32Array(rows.length * seqLen);
    const positionIds = new Int32Array(rows.length * seqLen);
    const logitsIndex: number[] = [];
    const positions: number[][] = [];
    rows.forEach((i, r) => {
      const tokens = sequences[i]!;
      for (let s = 0; s < seqLen; s++) {
        inputIds[r * seqLen + s] = s < tokens.length ? tokens[s]! : tokens[tokens.length - 1]!; // padding: any valid id
        positionIds[r * seqLen + s] = s;
      }
      const wanted = options.logitPositions?.(i) ?? [];
      positions.push(wanted);
      for (const p of wanted) logitsIndex.push(r * seqLen + p);
    });
    // The graph always computes at least one logits row; fetch position 0 when none are wanted.
    const fetchedIndex = logitsIndex.length > 0 ? logitsIndex : [0];
    const output = await session.run({
      batchSize: rows.length,
      seqLen,
      inputIds,
      positionIds,
      mask,
      pastLengths: rows.map(() => 0),
      past: past.slice(0, numLayers),
      pastCapacity: 0,
      logitsIndex: fetchedIndex,
      wantHiddenStates: options.wantHiddenStates,
    });
    onRun({ rows, seqLen, logits: output.logits, positions, hiddenStates: output.hiddenStates });
  }
}
