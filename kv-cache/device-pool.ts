import type { Tensor } from 'onnxruntime-node';
import type { Device } from '../engine/device.ts';
import { DropserveError } from '../engine/errors.ts';
import { type DeviceArenaMemory, DeviceKvArena, DeviceKvGraphs } from './device-arena.ts';
import type { TransferStats } from './device-transfers.ts';
import type { KvLayout } from './kv-layout.ts';
import type { KvCachePool } from './kv-pool.ts';
import { KvPoolBase } from './pool-base.ts';
import type { KvPoolOptions } from './pool-options.ts';

export type DeviceKvCachePoolOptions = KvPoolOptions;

/**
 * Device-resident KV memory for every batch group of one model under one byte budget: the
 * accounting of KvCachePool (placement 'device', allocated vs used bytes, per-arena stats) over
 * DeviceKvArena. Arenas hold no spare capacity (rows and tokens shrink as
 * sequences leave), so a growth that does not fit fails at once with DS_KV_EXHAUSTED, as on the host
 * once spare capacity is given back; the scheduler is expected to have planned within the budget.
 */
export class DeviceKvCachePool extends KvPoolBase<DeviceKvArena> implements KvCachePool<Tensor> {
  readonly placement = 'device';
  /** KV graphs per layout (keyed by kept layers), made before serving: creating a session is async. */
  readonly #graphs = new Map<string, DeviceKvGraphs>();

  /** A pool whose arenas can take any of `layouts`, with their KV graphs built on `device`. */
  static async create(
    options: DeviceKvCachePoolOptions & { device: Device; layouts: readonly KvLayout[] },
  ): Promise<DeviceKvCachePool> {
    const pool = new DeviceKvCachePool(options);
    for (const layout of options.layouts) {
      const key = layoutKey(layout);
      if (!pool.#graphs.has(key)) pool.#graphs.set(key, await DeviceKvGraphs.create(layout, options.device));
    }
    return pool;
  }

  /** Host↔device bytes of every arena's KV graphs (indices up; nothing comes down). */
  get transfers(): TransferStats {
    const total: TransferStats = {
      runs: 0,
      hostToDeviceBytes: 0,
      deviceToHostBytes: 0,
      lastRun: { hostToDeviceBytes: 0, deviceToHostBytes: 0 },
    };
    for (const graphs of this.#graphs.values()) {
      const t = graphs.transfers;
      total.runs += t.runs;
      total.hostToDeviceBytes += t.hostToDeviceBytes;
      total.deviceToHostBytes += t.deviceToHostBytes;
    }
    return total;
  }

  /** Releases the KV graph sessions once no arena has a change in flight. */
  async release(): Promise<void> {
    await Promise.all([...this.arenas.values()].map((a) => a.settled()));
    await Promise.all([...this.#graphs.values()].map((g) => g.release()));
  }

  constructor(options: DeviceKvCachePoolOptions) {
    super(options);
  }

  /**
   * An arena for one batch group, on the KV graphs of its layout (given, or made by create() for
   * that layout).
   */
  addArena(id: string, layoutOrGraphs: KvLayout | DeviceKvGraphs): DeviceKvArena {
    this.checkNewArenaId(id);
    const graphs =
      layoutOrGraphs instanceof DeviceKvGraphs ? layoutOrGraphs : this.#graphs.get(layoutKey(layoutOrGraphs));
    if (!graphs) {
      throw new DropserveError(
        'DS_INTERNAL',
        `no device KV graphs for a layout keeping attention layers [${(layoutOrGraphs as KvLayout).keptLayers}]`,
      );
    }
    const memory: DeviceArenaMemory = {
      reserve: (arena, nextBytes) => {
        const others = this.allocatedBytes - arena.allocatedBytes;
        if (others + nextBytes > this.budgetBytes) {
          throw new DropserveError(
            'DS_KV_EXHAUSTED',
            `device KV arena "${arena.id}" needs ${nextBytes} bytes; other arenas hold ${others} of the ` +
              `${this.budgetBytes}-byte budget`,
          );
        }
      },
      resized: (deltaBytes) => {
        this.resized(deltaBytes);
      },
    };
    const arena = new DeviceKvArena(graphs, this.blockTokens, memory, id);
    this.arenas.set(id, arena);
    return arena;
  }
}

const layoutKey = (layout: KvLayout): string => layout.keptLayers.join(',');
