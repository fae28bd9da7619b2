import type { KvArena } from '../../kv-cache/kv-pool.ts';
import type { ForwardInput, SublayerMask } from '../graph/io.ts';

/** The rows of one run: each feeds `tokens` after its `pastLength` cached positions. */
export interface RunRows {
  tokens: number[][];
  pastLengths: number[];
  /** KV the rows attend to: null when every row starts empty. */
  past: { arena: KvArena; views: { key: Float32Array; value: Float32Array }[] } | null;
}

/**
 * The one place a ForwardInput is put together: prefill, prefix-reuse extension, score chunk and
 * decode differ only in their rows and past. Every row feeds the same number of tokens (B × S).
 */
export function forwardInput(mask: SublayerMask, rows: RunRows, logitsIndex: number[]): ForwardInput {
  const seqLen = rows.tokens[0]!.length;
  const inputIds: number[] = [];
  const positionIds: number[] = [];
  rows.tokens.forEach((tokens, b) => {
    const start = rows.pastLengths[b]!;
    tokens.forEach((token, i) => {
      inputIds.push(token);
      positionIds.push(start + i);
    });
  });
  let kept = 0;
  const views = rows.past?.views;
  return {
    batchSize: rows.tokens.length,
    seqLen,
    inputIds,
    positionIds,
    mask,
    pastLengths: rows.pastLengths,
    past: mask.attnKeep.map((keep) =>
      keep ? (views?.[kept++] ?? { key: new Float32Array(0), value: new Float32Array(0) }) : null,
    ),
    pastCapacity: rows.past ? rows.past.arena.tokenCapacity : 0,
    logitsIndex,
  };
}
