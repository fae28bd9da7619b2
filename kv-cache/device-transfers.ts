/**
 * Bytes that cross between JS memory and a device, counted at the onnxruntime binding: every CPU
 * tensor fed to a non-CPU execution provider goes up, every output fetched to 'cpu' comes down.
 * Copies onnxruntime makes inside a run (a node that falls back to the CPU EP) are not visible here.
 */
import type { Tensor } from 'onnxruntime-node';

export interface TransferStats {
  runs: number;
  hostToDeviceBytes: number;
  deviceToHostBytes: number;
  /** The latest run alone. */
  lastRun: { hostToDeviceBytes: number; deviceToHostBytes: number };
}

export class TransferCounter {
  readonly #onDevice: boolean;
  readonly #stats: TransferStats = {
    runs: 0,
    hostToDeviceBytes: 0,
    deviceToHostBytes: 0,
    lastRun: { hostToDeviceBytes: 0, deviceToHostBytes: 0 },
  };

  /** On the CPU EP nothing crosses: every count stays 0. */
  constructor(onDevice: boolean) {
    this.#onDevice = onDevice;
  }

  /** Counts one run: its feeds and the outputs it returned. */
  count(feeds: Record<string, Tensor>, outputs: Record<string, Tensor>): void {
    const up = this.#onDevice ? hostBytes(Object.values(feeds)) : 0;
    const down = this.#onDevice ? hostBytes(Object.values(outputs)) : 0;
    const s = this.#stats;
    s.runs++;
    s.hostToDeviceBytes += up;
    s.deviceToHostBytes += down;
    s.lastRun = { hostToDeviceBytes: up, deviceToHostBytes: down };
  }

  /** A copy of the counts so far. */
  get stats(): TransferStats {
    return { ...this.#stats, lastRun: { ...this.#stats.lastRun } };
  }
}

/** Bytes of the tensors held in JS memory; device-located ones cross nothing. */
function hostBytes(tensors: readonly Tensor[]): number {
  let bytes = 0;
  for (const t of tensors) if (t.location === 'cpu') bytes += (t.data as ArrayBufferView).byteLength;
  return bytes;
}
