import type { KvLayout } from './kv-layout.ts';

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
export interface KvCachePool {
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
  addArena(id: string, layout: KvLayout): KvArena;
  arena(id: string): KvArena;
  stats(id: string): KvArenaStats;
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
 */
export interface KvArena {
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
  reserveTokens(tokens: number): void;
  /**
   * Writes freshly computed K/V rows: newKey/newValue are a graph output [B, S, kvH*D]; batch row b of
   * it goes to arena row rows[b] at positions length(rows[b]).. (capacity must already be reserved).
   */
  append(
    layerIndex: number,
    rows: number[],
    seqLen: number,
    newKey: Float32Array,
    newValue: Float32Array,
  ): void;
  /** Marks S tokens appended to each row (after every kept layer was written). */
  advance(rows: number[], seqLen: number): void;
  /**
   * Prefix reuse: copies positions 0..tokens-1 of every kept layer's K and V from one row to another
   * (fromRow ≠ toRow) and sets toRow's length to tokens. toRow must be empty and fromRow must hold at
   * least that many tokens; capacity must already be reserved. Afterwards the rows share nothing.
   */
  copyPrefix(fromRow: number, toRow: number, tokens: number): void;
  /** Row `row` alone, as a batch of one: [1, kvH, tokenCapacity, D] per kept layer (zero-copy). */
  rowViews(row: number): { key: Float32Array; value: Float32Array }[];
  /** Views of the first numRows rows of each kept layer, in layout.keptLayers order (zero-copy). */
  pastViews(): { key: Float32Array; value: Float32Array }[];
}
