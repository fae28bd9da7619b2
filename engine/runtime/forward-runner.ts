import type { TransferStats } from '../../kv-cache/device-transfers.ts';
import type { ForwardInput, ForwardOutput } from '../graph/io.ts';
import type { DeviceKvForwardInput, DeviceKvForwardOutput } from '../graph/model-session.ts';

/** What the runtime needs from a model session: one forward run at a time. */
export interface ForwardRunner {
  run(input: ForwardInput): Promise<ForwardOutput>;
  /**
   * A run whose past and new K/V stay on the device (sessions built with kvOnDevice): what a device
   * KV pool feeds. Absent on runners that keep KV in JS memory only.
   */
  runDeviceKv?(input: DeviceKvForwardInput): Promise<DeviceKvForwardOutput>;
  release(): Promise<void>;
  /** Bytes its runs moved between JS memory and a device (0 on the CPU EP); absent if not counted. */
  readonly transfers?: TransferStats;
}
