import { DropserveError } from '../engine/errors.ts';
import type { KvArenaStats } from './kv-pool.ts';
import { checkPoolOptions, type KvPoolOptions } from './pool-options.ts';

/** What the pools' shared bookkeeping reads of an arena, host or device. */
interface ArenaFigures {
  readonly bytesPerToken: number;
  readonly numRows: number;
  readonly usedBytes: number;
  readonly allocatedBytes: number;
}

/**
 * The bookkeeping every KV pool shares: the budget and block size, the arenas by id, and the bytes
 * they allocate (kept current by the arenas through `resized`). Placement and growth policy are the
 * subclasses'.
 */
export abstract class KvPoolBase<A extends ArenaFigures> {
  readonly budgetBytes: number;
  readonly blockTokens: number;
  protected readonly arenas = new Map<string, A>();
  #allocatedBytes = 0;

  constructor(options: KvPoolOptions) {
    ({ budgetBytes: this.budgetBytes, blockTokens: this.blockTokens } = checkPoolOptions(options));
  }

  get allocatedBytes(): number {
    return this.#allocatedBytes;
  }

  get usedBytes(): number {
    let bytes = 0;
    for (const arena of this.arenas.values()) bytes += arena.usedBytes;
    return bytes;
  }

  arena(id: string): A {
    const arena = this.arenas.get(id);
    if (!arena) throw new DropserveError('DS_NOT_FOUND', `no KV arena "${id}"`);
    return arena;
  }

  stats(id: string): KvArenaStats {
    const arena = this.arena(id);
    return {
      bytesPerToken: arena.bytesPerToken,
      sequences: arena.numRows,
      usedBytes: arena.usedBytes,
      allocatedBytes: arena.allocatedBytes,
    };
  }

  /** Throws when an arena of that id exists already. */
  protected checkNewArenaId(id: string): void {
    if (this.arenas.has(id)) throw new RangeError(`KV arena "${id}" already exists`);
  }

  /** An arena's buffers changed size by deltaBytes. */
  protected resized(deltaBytes: number): void {
    this.#allocatedBytes += deltaBytes;
  }
}
