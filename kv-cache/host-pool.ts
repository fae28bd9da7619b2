import { DropserveError } from '../engine/errors.ts';
import { type ArenaMemory, HostKvArena, type KvShape } from './host-arena.ts';
import type { KvLayout } from './kv-layout.ts';
import type { KvArenaStats, KvCachePool } from './kv-pool.ts';
import { checkPoolOptions, type KvPoolOptions } from './pool-options.ts';

export { HostKvArena } from './host-arena.ts';

export type HostKvCachePoolOptions = KvPoolOptions;

/**
 * KV memory in JS memory for every batch group of one model, under one budget. Arenas grow on demand
 * and take spare capacity only while the budget has room; when an arena's exact need does not fit,
 * every other arena first gives its spare capacity back.
 */
export class HostKvCachePool implements KvCachePool<Float32Array> {
  readonly budgetBytes: number;
  readonly blockTokens: number;
  readonly placement = 'host';
  readonly #arenas = new Map<string, HostKvArena>();
  #allocatedBytes = 0;

  constructor(options: HostKvCachePoolOptions) {
    ({ budgetBytes: this.budgetBytes, blockTokens: this.blockTokens } = checkPoolOptions(options));
  }

  get allocatedBytes(): number {
    return this.#allocatedBytes;
  }

  get usedBytes(): number {
    let bytes = 0;
    for (const arena of this.#arenas.values()) bytes += arena.usedBytes;
    return bytes;
  }

  addArena(id: string, layout: KvLayout): HostKvArena {
    if (this.#arenas.has(id)) throw new RangeError(`KV arena "${id}" already exists`);
    const memory: ArenaMemory = {
      grant: (arena, preferred, exact) => this.#grant(arena, preferred, exact),
      resized: (deltaBytes) => {
        this.#allocatedBytes += deltaBytes;
      },
    };
    const arena = new HostKvArena(id, layout, this.blockTokens, memory);
    this.#arenas.set(id, arena);
    return arena;
  }

  arena(id: string): HostKvArena {
    const arena = this.#arenas.get(id);
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

  /**
   * The shape an arena may grow to. The growing arena's current buffers are replaced, so only the
   * other arenas' bytes count next to the new shape.
   */
  #grant(arena: HostKvArena, preferred: KvShape, exact: KvShape): KvShape {
    const bytes = (shape: KvShape): number => shape.rows * shape.tokens * arena.bytesPerToken;
    const others = this.#allocatedBytes - arena.allocatedBytes;
    if (others + bytes(preferred) <= this.budgetBytes) return preferred;
    if (others + bytes(exact) <= this.budgetBytes) return exact;
    let othersExact = 0;
    for (const other of this.#arenas.values()) if (other !== arena) othersExact += other.exactBytes;
    if (othersExact + bytes(exact) > this.budgetBytes) {
      throw new DropserveError(
        'DS_KV_EXHAUSTED',
        `KV arena "${arena.id}" needs ${bytes(exact)} bytes (${exact.rows} rows × ${exact.tokens} tokens × ` +
          `${arena.bytesPerToken} bytes); other arenas need ${othersExact} bytes at least, ` +
          `${this.#allocatedBytes} of the ${this.budgetBytes}-byte budget are allocated`,
      );
    }
    for (const other of this.#arenas.values()) if (other !== arena) other.giveBackSpare();
    return exact;
  }
}
