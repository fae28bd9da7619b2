import { DropserveError } from '../engine/errors.ts';
import { type KvLayout, kvBytesPerToken } from './kv-layout.ts';
import type { KvArena, KvCachePool, KvReservation, KvVariantStats } from './kv-pool.ts';

/** Token capacity grows in blocks so that a new sequence rarely forces a reallocation. */
const TOKEN_BLOCK = 64;

export class HostKvCachePool implements KvCachePool {
  readonly budgetBytes: number;
  #reservedBytes = 0;
  readonly #arenas = new Map<string, HostKvArena>();
  readonly #reservations = new Map<string, KvReservation>();

  constructor(budgetBytes: number) {
    if (!Number.isFinite(budgetBytes) || budgetBytes <= 0) {
      throw new RangeError(`KV cache budget must be a positive number of bytes, got ${budgetBytes}`);
    }
    this.budgetBytes = budgetBytes;
  }

  get reservedBytes(): number {
    return this.#reservedBytes;
  }

  addVariant(variant: string, layout: KvLayout): KvArena {
    const arena = new HostKvArena(layout);
    this.#arenas.set(variant, arena);
    return arena;
  }

  arena(variant: string): KvArena {
    const arena = this.#arenas.get(variant);
    if (!arena) throw new DropserveError('DS_NOT_FOUND', `no KV arena for variant "${variant}"`);
    return arena;
  }

  tryReserve(variant: string, sequenceId: string, worstCaseTokens: number): KvReservation | null {
    const arena = this.arena(variant);
    const bytes = worstCaseTokens * arena.bytesPerToken;
    if (this.#reservedBytes + bytes > this.budgetBytes) return null;
    const reservation: KvReservation = { variant, sequenceId, tokens: worstCaseTokens, bytes };
    this.#reservations.set(sequenceId, reservation);
    this.#reservedBytes += bytes;
    return reservation;
  }

  release(reservation: KvReservation): void {
    if (this.#reservations.get(reservation.sequenceId) !== reservation) return;
    this.#reservations.delete(reservation.sequenceId);
    this.#reservedBytes -= reservation.bytes;
    const arena = this.#arenas.get(reservation.variant)!;
    if (arena.hasRow(reservation.sequenceId)) arena.removeRow(reservation.sequenceId);
    if (arena.numRows === 0) arena.trim();
  }

  stats(variant: string): KvVariantStats {
    const arena = this.#arenas.get(variant) as HostKvArena;
    let reservedBytes = 0;
    let sequences = 0;
    for (const r of this.#reservations.values()) {
      if (r.variant === variant) {
        reservedBytes += r.bytes;
        sequences++;
      }
    }
    return {
      bytesPerToken: arena.bytesPerToken,
      reservedBytes,
      sequences,
      allocatedBytes: arena.allocatedBytes,
    };
  }
}

/** An arena outside any pool budget, for short-lived private KV (chunked background scoring). */
export function createHostKvArena(layout: KvLayout): KvArena {
  return new HostKvArena(layout);
}

class HostKvArena implements KvArena {
  readonly layout: KvLayout;
  readonly bytesPerToken: number;
  readonly #rowElements: number; // kvH × D: floats per token per layer
  #rowCapacity = 0;
  #tokenCapacity = 0;
  #keys: Float32Array[] = [];
  #values: Float32Array[] = [];
  #sequenceIds: string[] = [];
  #lengths: number[] = [];
  #capacities: number[] = [];

  constructor(layout: KvLayout) {
    this.layout = layout;
    this.bytesPerToken = kvBytesPerToken(layout);
    this.#rowElements = layout.numKvHeads * layout.headDim;
  }

  get numRows(): number {
    return this.#sequenceIds.length;
  }

  get tokenCapacity(): number {
    return this.#tokenCapacity;
  }

  get allocatedBytes(): number {
    return this.#rowCapacity * this.#tokenCapacity * this.bytesPerToken;
  }

  hasRow(sequenceId: string): boolean {
    return this.#sequenceIds.includes(sequenceId);
  }

  rowOf(sequenceId: string): number {
    const row = this.#sequenceIds.indexOf(sequenceId);
    if (row < 0) throw new DropserveError('DS_INTERNAL', `sequence ${sequenceId} has no KV row`);
    return row;
  }

  sequenceIdAt(row: number): string {
    return this.#sequenceIds[row]!;
  }

  length(row: number): number {
    return this.#lengths[row]!;
  }

  addRow(sequenceId: string, capacityTokens: number): number {
    const neededTokens = Math.min(
      this.layout.maxSeqLen,
      Math.ceil(Math.max(capacityTokens, 1) / TOKEN_BLOCK) * TOKEN_BLOCK,
    );
    const rows = this.numRows + 1;
    if (rows > this.#rowCapacity || neededTokens > this.#tokenCapacity) {
      // Rows double so that a growing batch reallocates O(log n) times.
      const rowCapacity =
        rows > this.#rowCapacity ? Math.max(rows, this.#rowCapacity * 2) : this.#rowCapacity;
      this.#reallocate(rowCapacity, Math.max(neededTokens, this.#tokenCapacity));
    }
    this.#sequenceIds.push(sequenceId);
    this.#lengths.push(0);
    this.#capacities.push(capacityTokens);
    return rows - 1;
  }

  removeRow(sequenceId: string): void {
    const row = this.rowOf(sequenceId);
    const last = this.numRows - 1;
    if (row !== last) {
      const rowFloats = this.layout.numKvHeads * this.#tokenCapacity * this.layout.headDim;
      for (const buffers of [this.#keys, this.#values]) {
        for (const b of buffers) b.copyWithin(row * rowFloats, last * rowFloats, (last + 1) * rowFloats);
      }
      this.#sequenceIds[row] = this.#sequenceIds[last]!;
      this.#lengths[row] = this.#lengths[last]!;
      this.#capacities[row] = this.#capacities[last]!;
    }
    this.#sequenceIds.pop();
    this.#lengths.pop();
    this.#capacities.pop();
  }

  append(
    layerIndex: number,
    rows: number[],
    seqLen: number,
    newKey: Float32Array,
    newValue: Float32Array,
  ): void {
    const { numKvHeads, headDim } = this.layout;
    const cap = this.#tokenCapacity;
    const key = this.#keys[layerIndex]!;
    const value = this.#values[layerIndex]!;
    for (let b = 0; b < rows.length; b++) {
      const row = rows[b]!;
      const start = this.#lengths[row]!;
      if (start + seqLen > this.#capacities[row]! || start + seqLen > cap) {
        throw new DropserveError(
          'DS_INTERNAL',
          `KV row ${row} overflow: ${start}+${seqLen} tokens > reserved ${this.#capacities[row]}`,
        );
      }
      for (let s = 0; s < seqLen; s++) {
        const src = (b * seqLen + s) * this.#rowElements;
        for (let h = 0; h < numKvHeads; h++) {
          const dst = ((row * numKvHeads + h) * cap + start + s) * headDim;
          const from = src + h * headDim;
          key.set(newKey.subarray(from, from + headDim), dst);
          value.set(newValue.subarray(from, from + headDim), dst);
        }
      }
    }
  }

  advance(rows: number[], seqLen: number): void {
    for (const row of rows) this.#lengths[row] = this.#lengths[row]! + seqLen;
  }

  copyPrefix(fromRow: number, toRow: number, tokens: number): void {
    if (fromRow === toRow || !(fromRow < this.numRows && toRow < this.numRows)) {
      throw new DropserveError(
        'DS_INTERNAL',
        `copyPrefix: bad rows ${fromRow} → ${toRow} of ${this.numRows}`,
      );
    }
    if (this.#lengths[toRow] !== 0 || tokens > this.#lengths[fromRow]! || tokens > this.#capacities[toRow]!) {
      throw new DropserveError(
        'DS_INTERNAL',
        `copyPrefix: ${tokens} tokens from row ${fromRow} (length ${this.#lengths[fromRow]}) into row ${toRow} (length ${this.#lengths[toRow]}, reserved ${this.#capacities[toRow]})`,
      );
    }
    const { numKvHeads, headDim } = this.layout;
    const cap = this.#tokenCapacity;
    const floats = tokens * headDim;
    // Per head, positions 0..tokens-1 are one contiguous run of [tokens, D] floats.
    for (const buffers of [this.#keys, this.#values]) {
      for (const b of buffers) {
        for (let h = 0; h < numKvHeads; h++) {
          const from = (fromRow * numKvHeads + h) * cap * headDim;
          const to = (toRow * numKvHeads + h) * cap * headDim;
          b.copyWithin(to, from, from + floats);
        }
      }
    }
    this.#lengths[toRow] = tokens;
  }

  rowViews(row: number): { key: Float32Array; value: Float32Array }[] {
    const rowFloats = this.layout.numKvHeads * this.#tokenCapacity * this.layout.headDim;
    return this.#keys.map((key, i) => ({
      key: key.subarray(row * rowFloats, (row + 1) * rowFloats),
      value: this.#values[i]!.subarray(row * rowFloats, (row + 1) * rowFloats),
    }));
  }

  pastViews(): { key: Float32Array; value: Float32Array }[] {
    const floats = this.numRows * this.layout.numKvHeads * this.#tokenCapacity * this.layout.headDim;
    return this.#keys.map((key, i) => ({
      key: key.subarray(0, floats),
      value: this.#values[i]!.subarray(0, floats),
    }));
  }

  trim(): void {
    if (this.numRows > 0) return;
    this.#keys = [];
    this.#values = [];
    this.#rowCapacity = 0;
    this.#tokenCapacity = 0;
  }

  /** New buffers of [rows, kvH, tokens, D]; live rows are copied over with the new token stride. */
  #reallocate(rowCapacity: number, tokenCapacity: number): void {
    const { numKvHeads, headDim } = this.layout;
    const size = rowCapacity * numKvHeads * tokenCapacity * headDim;
    const copy = (old: Float32Array | undefined): Float32Array => {
      const next = new Float32Array(size);
      if (!old) return next;
      for (let r = 0; r < this.numRows; r++) {
        for (let h = 0; h < numKvHeads; h++) {
          const len = this.#lengths[r]! * headDim;
          const from = (r * numKvHeads + h) * this.#tokenCapacity * headDim;
          const to = (r * numKvHeads + h) * tokenCapacity * headDim;
          next.set(old.subarray(from, from + len), to);
        }
      }
      return next;
    };
    const layers = this.layout.keptLayers.length;
    this.#keys = Array.from({ length: layers }, (_, i) => copy(this.#keys[i]));
    this.#values = Array.from({ length: layers }, (_, i) => copy(this.#values[i]));
    this.#rowCapacity = rowCapacity;
    this.#tokenCapacity = tokenCapacity;
  }
}
