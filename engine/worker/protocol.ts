import type { GenerateEvent, GenerateRequest, ScoreRequest, ScoreResult, VariantInfo } from '../client.ts';
import type { Device } from '../device.ts';
import type { KvMemoryOptions } from '../engine.ts';
import type { SerializedError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import type { ModelWeights } from '../model/weights.ts';
import type { PrefixReuseOptions } from '../runtime/engine-core.ts';
import type { VariantDefinition } from '../runtime/variant.ts';
import type { StartupPhase } from '../startup-phases.ts';

/** Every message between the server thread and the engine worker; `id` pairs requests and replies. */
export type ToWorker =
  | {
      type: 'init';
      config: ModelConfig;
      weights: ModelWeights;
      /** The weights are views of one transferred image of this checkpoint file (weight-file.ts). */
      weightFilePath?: string;
      variants: VariantDefinition[];
      kvCacheBytes: number;
      maxQueue: number;
      device: Device;
      threads: number;
      prefixReuse?: PrefixReuseOptions;
      kvMemory: KvMemoryOptions;
    }
  | { type: 'generate'; request: GenerateRequest }
  | { type: 'abort'; requestId: string }
  | { type: 'score'; id: number; request: ScoreRequest }
  | { type: 'close'; graceMs: number };

export type FromWorker =
  /** receivedInitAtEpochMs: when the init message (weights included) arrived in the worker. */
  | { type: 'ready'; variants: VariantInfo[]; receivedInitAtEpochMs: number; phases: StartupPhase[] }
  | { type: 'initFailed'; error: SerializedError }
  /** Events of one scheduling round, batched to keep postMessage off the per-token path. */
  | { type: 'events'; events: { requestId: string; event: GenerateEvent }[]; variants: VariantInfo[] }
  | { type: 'rejected'; requestId: string; error: SerializedError }
  | { type: 'scoreResult'; id: number; result?: ScoreResult; error?: SerializedError }
  | { type: 'closed' };
