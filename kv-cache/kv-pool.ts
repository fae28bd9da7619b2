import type { KvLayout } from './kv-layout.ts';

/**
 * KV memory for all variants of one model under one byte budget. The scheduler asks it for a
 * reservation (the sequence's worst case: prompt + max_tokens, capped at the context) and gets null
 * when it does not fit; it never indexes buffers itself. A host (JS-memory) pool implements this
 * today; a device-resident pool (CUDA / WebGPU IO binding) can implement the same interface.
 */
export interface KvCachePool {
  readonly budgetBytes: number;
  /** Bytes reserved by admitted sequences, all variants. */
  readonly reservedBytes: number;
  /** Registers a variant's layout; the arena holds that variant's running sequences. */
  addVariant(variant: string, layout: KvLayout): KvArena;
  arena(variant: string): KvArena;
  /** Reserves worst-case bytes for a sequence; null when the budget cannot take it now. */
  tryReserve(variant: string, sequenceId: string, worstCaseTokens: number): KvReservation | null;
  release(reservation: KvReservation): void;
  stats(variant: string): KvVariantStats;
}

export interface KvReservation {
  readonly variant: string;
  readonly sequenceId: string;
  readonly tokens: number;
  readonly bytes: number;
}

export interface KvVariantStats {
  bytesPerToken: number;
  reservedBytes: number;
  sequences: number;
  /** Bytes actually allocated for the variant's arena (rows × row capacity). */
  allocatedBytes: number;
}

/**
 * The running sequences of one variant, batch-major, so that a decode step feeds every layer's
 * cache to the graph as one zero-copy tensor:
 *
 *   key[layer], value[layer]: Float32Array [rowCapacity, numKvHeads, tokenCapacity, headDim]
 *                              row r = the r-th running sequence; rows 0..numRows-1 are live
 *
 * Removing a row moves the last row into the hole, so live rows stay contiguous.
 */
export interface KvArena {
  readonly layout: KvLayout;
  readonly bytesPerToken: number;
  readonly numRows: number;
  /** Token positions per row in the buffers (≥ every live row's reserved tokens). */
  readonly tokenCapacity: number;
  /** Adds a sequence with room for capacityTokens; returns its row. */
  addRow(sequenceId: string, capacityTokens: number): number;
  removeRow(sequenceId: string): void;
  rowOf(sequenceId: string): number;
  sequenceIdAt(row: number): string;
  /** Tokens currently cached for a row. */
  length(row: number): number;
  /**
   * Writes freshly computed K/V rows: newKey/newValue are a graph output [B, S, kvH*D]; batch row b of
   * it goes to arena row rows[b] at positions length(rows[b]).. and each row's length grows by S.
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
   * (fromRow ≠ toRow) and sets toRow's length to tokens. toRow must be empty, and fromRow must hold at
   * least that many tokens. After the copy the rows share nothing: either may be removed.
   */
  copyPrefix(fromRow: number, toRow: number, tokens: number): void;
  /** Row `row` alone, as a batch of one: [1, kvH, tokenCapacity, D] per kept layer (zero-copy). */
  rowViews(row: number): { key: Float32Array; value: Float32Array }[];
  /** Views of the first numRows rows of each kept layer, in layout.keptLayers order. */
  pastViews(): { key: Float32Array; value: Float32Array }[];
  /** Frees all buffers (arena empty). */
  trim(): void;
}
