import { DropserveError } from '../engine/errors.ts';
import { blockAligned, type KvLayout, kvBytesPerToken } from './kv-layout.ts';
import type { KvArena } from './kv-pool.ts';

/** Rows × token positions of an arena's buffers. */
export interface KvShape {
  rows: number;
  tokens: number;
}

/** What an arena asks of the pool that holds its budget. */
export interface ArenaMemory {
  /**
   * Called before an arena grows: returns `preferred` (with spare capacity) when the budget takes it,
   * else `exact`, giving back other arenas' spare capacity first if that is what it takes. Throws
   * DS_KV_EXHAUSTED when even `exact` cannot fit.
   */
  grant(arena: HostKvArena, preferred: KvShape, exact: KvShape): KvShape;
  /** The arena's buffers changed size by `deltaBytes` (after any reallocation, shrinks included). */
  resized(deltaBytes: number): void;
}

type KvViews = { key: Float32Array; value: Float32Array }[];

/**
 * One batch group's K/V in JS memory: per kept layer one Float32Array [rowCapacity, kvH, tokenCapacity, D]
 * for K and one for V. Token capacity is always whole blocks. Views handed out (pastViews, rowViews)
 * are subarrays, so decode feeds the cache without copying; they stay valid until the next addRow,
 * removeRow or reserveTokens on ANY arena of the pool (growth may give back this arena's spare
 * capacity, which reallocates it).
 */
export class HostKvArena implements KvArena<Float32Array> {
  readonly id: string;
  readonly layout: KvLayout;
  readonly bytesPerToken: number;
  readonly blockTokens: number;
  readonly #memory: ArenaMemory;
  /** Token capacity never grows past the model's context, rounded up to a block. */
  readonly #maxTokens: number;
  #rowCapacity = 0;
  #tokenCapacity = 0;
  #keys: Float32Array[] = [];
  #values: Float32Array[] = [];
  #sequenceIds: string[] = [];
  #lengths: number[] = [];
  /**
   * The largest reserveTokens() since a row last left: shrinking and giving back spare capacity keep
   * it, so a reservation holds until the rows it was made for have written their tokens.
   */
  #reservedTokens = 0;

  constructor(id: string, layout: KvLayout, blockTokens: number, memory: ArenaMemory) {
    this.id = id;
    this.layout = layout;
    this.bytesPerToken = kvBytesPerToken(layout);
    this.blockTokens = blockTokens;
    this.#memory = memory;
    this.#maxTokens = blockAligned(layout.maxSeqLen, blockTokens);
  }

  get numRows(): number {
    return this.#sequenceIds.length;
  }

  get rowCapacity(): number {
    return this.#rowCapacity;
  }

  get tokenCapacity(): number {
    return this.#tokenCapacity;
  }

  get allocatedBytes(): number {
    return this.#shapeBytes({ rows: this.#rowCapacity, tokens: this.#tokenCapacity });
  }

  /** Bytes of the blocks that live tokens occupy. */
  get usedBytes(): number {
    let tokens = 0;
    for (const length of this.#lengths) tokens += blockAligned(length, this.blockTokens);
    return tokens * this.bytesPerToken;
  }

  /** Bytes of the exact shape: live rows × whole blocks of the longest row (or reservation). */
  get exactBytes(): number {
    return this.#shapeBytes(this.#exactShape(this.numRows, 0));
  }

  hasRow(sequenceId: string): boolean {
    return this.#sequenceIds.includes(sequenceId);
  }

  rowOf(sequenceId: string): number {
    const row = this.#sequenceIds.indexOf(sequenceId);
    if (row < 0)
      throw new DropserveError('DS_INTERNAL', `sequence ${sequenceId} has no KV row in ${this.id}`);
    return row;
  }

  sequenceIdAt(row: number): string {
    this.#checkRow(row, 'sequenceIdAt');
    return this.#sequenceIds[row]!;
  }

  length(row: number): number {
    this.#checkRow(row, 'length');
    return this.#lengths[row]!;
  }

  addRow(sequenceId: string): number {
    if (this.hasRow(sequenceId)) {
      throw new DropserveError('DS_INTERNAL', `sequence ${sequenceId} already has a KV row in ${this.id}`);
    }
    this.#ensure(this.numRows + 1, 0);
    const row = this.numRows;
    // A reused row slot still holds an earlier sequence's K/V; clear it so the buffers only ever
    // contain what this arena's operations wrote (padding the attention op must not see anyway).
    const rowFloats = this.#rowFloats();
    for (const buffer of [...this.#keys, ...this.#values]) {
      buffer.fill(0, row * rowFloats, (row + 1) * rowFloats);
    }
    this.#sequenceIds.push(sequenceId);
    this.#lengths.push(0);
    return row;
  }

  removeRow(sequenceId: string): void {
    const row = this.rowOf(sequenceId);
    const last = this.numRows - 1;
    if (row !== last) {
      // The whole row, padding included, so the hole keeps nothing of the sequence that left.
      this.#copyRow(last, row, this.#tokenCapacity);
      this.#sequenceIds[row] = this.#sequenceIds[last]!;
      this.#lengths[row] = this.#lengths[last]!;
    }
    this.#sequenceIds.pop();
    this.#lengths.pop();
    this.#reservedTokens = 0;
    // Memory goes back when load drops: all of it when the arena is empty, the excess when it holds
    // more than twice what its live rows need (the factor keeps add/remove churn from reallocating).
    if (this.numRows === 0) this.#reallocate({ rows: 0, tokens: 0 });
    else if (this.allocatedBytes > 2 * this.exactBytes) this.giveBackSpare();
  }

  reserveTokens(tokens: number): void {
    if (!Number.isInteger(tokens) || tokens < 0 || tokens > this.layout.maxSeqLen) {
      throw new DropserveError(
        'DS_INTERNAL',
        `reserveTokens(${tokens}) in ${this.id}: must be an integer in 0..${this.layout.maxSeqLen}`,
      );
    }
    this.#ensure(this.numRows, tokens);
    this.#reservedTokens = Math.max(this.#reservedTokens, tokens);
  }

  /** Reallocates to the exact shape if the buffers hold more; returns the bytes given back. */
  giveBackSpare(): number {
    const before = this.allocatedBytes;
    if (before > this.exactBytes) this.#reallocate(this.#exactShape(this.numRows, 0));
    return before - this.allocatedBytes;
  }

  append(
    layerIndex: number,
    rows: readonly number[],
    seqLen: number,
    newKey: Float32Array,
    newValue: Float32Array,
  ): void {
    const { numKvHeads, headDim } = this.layout;
    const key = this.#keys[layerIndex];
    const value = this.#values[layerIndex];
    if (!key || !value) {
      throw new DropserveError(
        'DS_INTERNAL',
        `append: layer index ${layerIndex} of ${this.#keys.length} in ${this.id}`,
      );
    }
    const tokenElements = numKvHeads * headDim;
    if (newKey.length < rows.length * seqLen * tokenElements || newValue.length < newKey.length) {
      throw new DropserveError(
        'DS_INTERNAL',
        `append: ${newKey.length}/${newValue.length} floats for ${rows.length} rows × ${seqLen} tokens × ${tokenElements} in ${this.id}`,
      );
    }
    const cap = this.#tokenCapacity;
    for (let b = 0; b < rows.length; b++) {
      const row = rows[b]!;
      this.#checkRow(row, 'append');
      const start = this.#lengths[row]!;
      if (start + seqLen > cap) {
        throw new DropserveError(
          'DS_INTERNAL',
          `append: row ${row} of ${this.id} would hold ${start}+${seqLen} tokens, capacity ${cap} (reserveTokens first)`,
        );
      }
      for (let s = 0; s < seqLen; s++) {
        const from = (b * seqLen + s) * tokenElements;
        for (let h = 0; h < numKvHeads; h++) {
          const to = ((row * numKvHeads + h) * cap + start + s) * headDim;
          const head = from + h * headDim;
          key.set(newKey.subarray(head, head + headDim), to);
          value.set(newValue.subarray(head, head + headDim), to);
        }
      }
    }
  }

  appendAll(
    rows: readonly number[],
    seqLen: number,
    newKeys: readonly (Float32Array | null)[],
    newValues: readonly (Float32Array | null)[],
  ): void {
    this.layout.keptLayers.forEach((layer, i) => {
      const key = newKeys[layer];
      const value = newValues[layer];
      if (!key || !value) {
        throw new DropserveError(
          'DS_INTERNAL',
          `appendAll: layer ${layer} is kept in ${this.id} but the run gave no K/V`,
        );
      }
      this.append(i, rows, seqLen, key, value);
    });
    this.advance(rows, seqLen);
  }

  advance(rows: readonly number[], seqLen: number): void {
    for (const row of rows) {
      this.#checkRow(row, 'advance');
      const length = this.#lengths[row]! + seqLen;
      if (length > this.#tokenCapacity) {
        throw new DropserveError(
          'DS_INTERNAL',
          `advance: row ${row} of ${this.id} to ${length} tokens, capacity ${this.#tokenCapacity}`,
        );
      }
      this.#lengths[row] = length;
    }
  }

  copyPrefix(fromRow: number, toRow: number, tokens: number): void {
    if (
      fromRow === toRow ||
      !(fromRow >= 0 && fromRow < this.numRows && toRow >= 0 && toRow < this.numRows)
    ) {
      throw new DropserveError(
        'DS_INTERNAL',
        `copyPrefix: bad rows ${fromRow} → ${toRow} of ${this.numRows}`,
      );
    }
    if (
      !Number.isInteger(tokens) ||
      tokens < 0 ||
      this.#lengths[toRow] !== 0 ||
      tokens > this.#lengths[fromRow]!
    ) {
      throw new DropserveError(
        'DS_INTERNAL',
        `copyPrefix: ${tokens} tokens from row ${fromRow} (length ${this.#lengths[fromRow]}) into row ${toRow} (length ${this.#lengths[toRow]})`,
      );
    }
    this.#copyRow(fromRow, toRow, tokens);
    this.#lengths[toRow] = tokens;
  }

  rowViews(row: number): KvViews {
    this.#checkRow(row, 'rowViews');
    const rowFloats = this.#rowFloats();
    return this.#keys.map((key, i) => ({
      key: key.subarray(row * rowFloats, (row + 1) * rowFloats),
      value: this.#values[i]!.subarray(row * rowFloats, (row + 1) * rowFloats),
    }));
  }

  pastViews(): KvViews {
    const floats = this.numRows * this.#rowFloats();
    return this.#keys.map((key, i) => ({
      key: key.subarray(0, floats),
      value: this.#values[i]!.subarray(0, floats),
    }));
  }

  /** Floats of one row of one layer's K (or V) buffer: [kvH, tokenCapacity, D]. */
  #rowFloats(): number {
    return this.layout.numKvHeads * this.#tokenCapacity * this.layout.headDim;
  }

  #shapeBytes(shape: KvShape): number {
    return shape.rows * shape.tokens * this.bytesPerToken;
  }

  /** `rows` rows of whole blocks covering the longest live row, any reservation and `tokens`. */
  #exactShape(rows: number, tokens: number): KvShape {
    let longest = Math.max(this.#reservedTokens, tokens);
    for (const length of this.#lengths) longest = Math.max(longest, length);
    return { rows, tokens: blockAligned(longest, this.blockTokens) };
  }

  /**
   * Grows the buffers to hold `rows` rows of `tokens` positions. Spare capacity (rows ×2, tokens
   * ×1.5 in whole blocks) makes a growing batch reallocate O(log n) times; the pool grants it only
   * while the budget has room, else the exact need.
   */
  #ensure(rows: number, tokens: number): void {
    const exact = this.#exactShape(rows, tokens);
    if (exact.rows <= this.#rowCapacity && exact.tokens <= this.#tokenCapacity) return;
    const rowCapacity = this.#rowCapacity;
    const tokenCapacity = this.#tokenCapacity;
    const grownTokens = blockAligned(tokenCapacity + Math.ceil(tokenCapacity / 2), this.blockTokens);
    const preferred: KvShape = {
      rows: exact.rows > rowCapacity ? Math.max(exact.rows, 2 * rowCapacity) : rowCapacity,
      tokens:
        exact.tokens > tokenCapacity
          ? Math.max(exact.tokens, Math.min(this.#maxTokens, grownTokens))
          : tokenCapacity,
    };
    this.#reallocate(this.#memory.grant(this, preferred, exact));
  }

  /** Copies positions 0..tokens-1 of every head, every kept layer, K and V, from one row to another. */
  #copyRow(fromRow: number, toRow: number, tokens: number): void {
    const { numKvHeads, headDim } = this.layout;
    const cap = this.#tokenCapacity;
    const floats = tokens * headDim;
    // Per head, positions 0..tokens-1 are one contiguous run of [tokens, D] floats.
    for (const buffer of [...this.#keys, ...this.#values]) {
      for (let h = 0; h < numKvHeads; h++) {
        const from = (fromRow * numKvHeads + h) * cap * headDim;
        const to = (toRow * numKvHeads + h) * cap * headDim;
        buffer.copyWithin(to, from, from + floats);
      }
    }
  }

  /**
   * New buffers of [rows, kvH, tokens, D]; live rows are copied over with the new token stride. While
   * copying, the old and the new buffers both exist: that transient is not counted in allocatedBytes
   * (the budget bounds what the arenas hold between operations, as the GQA op sees it).
   */
  #reallocate(shape: KvShape): void {
    const { numKvHeads, headDim } = this.layout;
    const before = this.allocatedBytes;
    const oldCap = this.#tokenCapacity;
    const size = shape.rows * numKvHeads * shape.tokens * headDim;
    const copy = (old: Float32Array | undefined): Float32Array => {
      const next = new Float32Array(size);
      if (!old) return next;
      if (shape.tokens === oldCap) {
        // Same token stride: the live rows are one contiguous prefix.
        next.set(old.subarray(0, this.numRows * numKvHeads * oldCap * headDim));
        return next;
      }
      for (let r = 0; r < this.numRows; r++) {
        const floats = this.#lengths[r]! * headDim;
        for (let h = 0; h < numKvHeads; h++) {
          const from = (r * numKvHeads + h) * oldCap * headDim;
          next.set(old.subarray(from, from + floats), (r * numKvHeads + h) * shape.tokens * headDim);
        }
      }
      return next;
    };
    const layers = this.layout.keptLayers.length;
    this.#keys = Array.from({ length: layers }, (_, i) => copy(this.#keys[i]));
    this.#values = Array.from({ length: layers }, (_, i) => copy(this.#values[i]));
    this.#rowCapacity = shape.rows;
    this.#tokenCapacity = shape.tokens;
    this.#memory.resized(this.allocatedBytes - before);
  }

  #checkRow(row: number, operation: string): void {
    if (!(Number.isInteger(row) && row >= 0 && row < this.numRows)) {
      throw new DropserveError('DS_INTERNAL', `${operation}: row ${row} of ${this.numRows} in ${this.id}`);
    }
  }
}
