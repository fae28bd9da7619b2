import { DropserveError } from '../engine/errors.ts';
import { type ArenaMemory, HostKvArena, type KvShape } from './host-arena.ts';
import type { KvLayout } from './kv-layout.ts';
import type { KvCachePool } from './kv-pool.ts';
import { KvPoolBase } from './pool-base.ts';
import type { KvPoolOptions } from './pool-options.ts';

export { HostKvArena } from './host-arena.ts';

export type HostKvCachePoolOptions = KvPoolOptions;

/**
 * KV memory in JS memory for every batch group of one model, under one budget. Arenas grow on demand
 * and take spare capacity only while the budget has room; when an arena's exact need does not fit,
 * every other arena first gives its spare capacity back.
 */
export class HostKvCachePool extends KvPoolBase<HostKvArena> implements KvCachePool<Float32Array> {
  readonly placement = 'host';

  constructor(options: HostKvCachePoolOptions) {
    super(options);
  }

  addArena(id: string, layout: KvLayout): HostKvArena {
    this.checkNewArenaId(id);
    const memory: ArenaMemory = {
      grant: (arena, preferred, exact) => this.#grant(arena, preferred, exact),
      resized: (deltaBytes) => {
        this.resized(deltaBytes);
      },
    };
    const arena = new HostKvArena(id, layout, this.blockTokens, memory);
    this.arenas.set(id, arena);
    return arena;
  }

  /**
   * The shape an arena may grow to. The growing arena's current buffers are replaced, so only the
   * other arenas' bytes count next to the new shape.
   */
  #grant(arena: HostKvArena, preferred: KvShape, exact: KvShape): KvShape {
    const bytes = (shape: KvShape): number => shape.rows * shape.tokens * arena.bytesPerToken;
    const others = this.allocatedBytes - arena.allocatedBytes;
    if (others + bytes(preferred) <= this.budgetBytes) return preferred;
    if (others + bytes(exact) <= this.budgetBytes) return exact;
    let othersExact = 0;
    for (const other of this.arenas.values()) if (other !== arena) othersExact += other.exactBytes;
    if (othersExact + bytes(exact) > this.budgetBytes) {
      throw new DropserveError(
        'DS_KV_EXHAUSTED',
        `KV arena "${arena.id}" needs ${bytes(exact)} bytes (${exact.rows} rows × ${exact.tokens} tokens × ` +
          `${arena.bytesPerToken} bytes); other arenas need ${othersExact} bytes at least, ` +
          `${this.allocatedBytes} of the ${this.budgetBytes}-byte budget are allocated`,
      );
    }
    for (const other of this.arenas.values()) if (other !== arena) other.giveBackSpare();
    return exact;
  }
}
