import type { KvData, KvPair } from '../../kv-cache/kv-pool.ts';
import type { ForwardInput, SublayerMask } from '../graph/io.ts';

/** The rows of one run: each feeds `tokens` after its `pastLength` cached positions. */
export interface RunRows<T extends KvData> {
  tokens: number[][];
  pastLengths: number[];
  /** Per kept layer, the KV the rows attend to (tokenCapacity positions a row); null when all start empty. */
  past: { views: KvPair<T>[]; tokenCapacity: number } | null;
}

/** A ForwardInput whose past holds host arrays (ModelSession.run) or device tensors (runDeviceKv). */
export type RunInput<T extends KvData> = Omit<ForwardInput, 'past'> & { past: (KvPair<T> | null)[] };

/**
 * The one place a model run's input is put together: prefill, prefix-reuse extension, score chunk and
 * decode differ only in their rows and past. Every row feeds the same number of tokens (B × S). A
 * kept layer with no past gets `empty` (host: zero-length arrays; device: null, which the session
 * replaces by its shared empty tensor).
 */
export function forwardInput<T extends KvData>(
  mask: SublayerMask,
  rows: RunRows<T>,
  logitsIndex: number[],
  empty: () => KvPair<T> | null,
): RunInput<T> {
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
    past: mask.attnKeep.map((keep) => (keep ? (views?.[kept++] ?? empty()) : null)),
    pastCapacity: rows.past ? rows.past.tokenCapacity : 0,
    logitsIndex,
  };
}
