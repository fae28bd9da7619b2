import type { Tensor } from 'onnxruntime-node';
import type { TransferStats } from './device-transfers.ts';
import type { KvLayout } from './kv-layout.ts';

/** K/V as a pool holds it: JS memory fed zero-copy (host), or tensors that stay on the device. */
export type KvData = Float32Array | Tensor;

/** One kept layer's past K and V. */
export interface KvPair<T extends KvData = KvData> {
  key: T;
  value: T;
}

/**
 * KV memory for every batch group of one model (a variant's running sequences, its background
 * scores) under one byte budget. Memory is taken on demand: an arena's token capacity grows in
 * blocks of `blockTokens` as its longest row grows, rows are added as sequences are admitted, and
 * `allocatedBytes` — the bytes of the buffers that exist — never exceeds `budgetBytes`.
 *
 * The scheduler decides what must fit (engine/runtime/scheduler.ts, with kvShapeBytes from
 * kv-layout.ts); the pool owns placement and memory and never decides which sequence runs. A host
 * (JS-memory) pool implements this today; a device-resident pool implements the same interface.
 */
export interface KvCachePool<T extends KvData = KvData> {
  readonly budgetBytes: number;
  /** Tokens per block: the unit in which arenas grow and usage is counted. */
  readonly blockTokens: number;
  /** Where the K/V buffers live. */
  readonly placement: 'host' | 'device';
  /** Bytes of K/V buffers allocated now, all arenas together (≤ budgetBytes at every moment). */
  readonly allocatedBytes: number;
  /** Bytes of the blocks that live tokens occupy, all arenas: Σ rows ⌈length / block⌉ × block × bytes/token. */
  readonly usedBytes: number;
  /** Creates the arena of one batch group (e.g. a variant's decode batch, or its background scores). */
  addArena(id: string, layout: KvLayout): KvArena<T>;
  arena(id: string): KvArena<T>;
  stats(id: string): KvArenaStats;
  /** Bytes its own graphs moved between host and device (a device pool's KV updates). */
  readonly transfers?: TransferStats;
  /** Frees what the pool holds beyond its buffers (a device pool's graph sessions). */
  release?(): Promise<void>;
}

export interface KvArenaStats {
  bytesPerToken: number;
  /** Live rows (sequences). */
  sequences: number;
  /** Bytes of the blocks its live tokens occupy. */
  usedBytes: number;
  /** Bytes of its buffers (rows × token capacity, including spare rows kept for reuse). */
  allocatedBytes: number;
}

/**
 * The running sequences of one batch group, batch-major, so that a decode step feeds every layer's
 * cache to the graph as one zero-copy tensor:
 *
 *   key[layer], value[layer]: [rowCapacity, numKvHeads, tokenCapacity, headDim]
 *                              row r = the r-th live sequence; rows 0..numRows-1 are live
 *
 * The GQA op takes one past tensor per batch, so every row has the token capacity of the longest:
 * that padding is allocated memory and counts against the budget. Removing a row moves the last row
 * into the hole, so live rows stay contiguous. Growth that the pool's budget cannot take — after it
 * has given back every arena's spare capacity — throws DS_KV_EXHAUSTED: the scheduler is expected to
 * have planned within the budget.
 *
 * Row bookkeeping (addRow, removeRow, rowOf, length) is synchronous. Moving K/V may not be: a device
 * arena runs a small graph for it, so those methods may return a promise, and a device arena carries
 * out its changes in the order they were asked for (a row removed before an append is gone when the
 * append runs). Callers await every method that may return one.
 */
export interface KvArena<T extends KvData = KvData> {
  readonly id: string;
  readonly layout: KvLayout;
  readonly bytesPerToken: number;
  readonly numRows: number;
  /** Token positions per row in the buffers: a multiple of the block size, ≥ every live row's length. */
  readonly tokenCapacity: number;
  /** Adds an empty row for a sequence (growing the buffers if needed); returns its row. */
  addRow(sequenceId: string): number;
  removeRow(sequenceId: string): void;
  hasRow(sequenceId: string): boolean;
  rowOf(sequenceId: string): number;
  sequenceIdAt(row: number): string;
  /** Tokens currently cached for a row. */
  length(row: number): number;
  /** Makes every row able to hold `tokens` positions (capacity rounded up to whole blocks). */
  reserveTokens(tokens: number): void | Promise<void>;
  /**
   * Writes one run's K/V and advances the rows: newKeys/newValues are indexed by model layer (the
   * graph's new_key_<l> [B, S, kvH*D]; null for dropped layers) and the arena takes the layers its
   * layout keeps. Batch row b goes to arena row rows[b] at positions length(rows[b]).., each row's
   * length grows by S. Capacity must already be reserved.
   */
  appendAll(
    rows: readonly number[],
    seqLen: number,
    newKeys: readonly (T | null)[],
    newValues: readonly (T | null)[],
  ): void | Promise<void>;
  /**
   * Prefix reuse: copies positions 0..tokens-1 of every kept layer's K and V from one row to another
   * (fromRow ≠ toRow) and sets toRow's length to tokens. toRow must be empty and fromRow must hold at
   * least that many tokens; capacity must already be reserved. Afterwards the rows share nothing.
   */
  copyPrefix(fromRow: number, toRow: number, tokens: number): void | Promise<void>;
  /** Row `row` alone, as a batch of one: [1, kvH, tokenCapacity, D] per kept layer. */
  rowViews(row: number): KvPair<T>[] | Promise<KvPair<T>[]>;
  /** The first numRows rows of each kept layer, in layout.keptLayers order (zero-copy on the host). */
  pastViews(): KvPair<T>[] | Promise<KvPair<T>[]>;
}
