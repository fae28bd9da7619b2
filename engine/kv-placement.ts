import { DeviceKvCachePool } from '../kv-cache/device-pool.ts';
import { HostKvCachePool } from '../kv-cache/host-pool.ts';
import { DEFAULT_KV_BLOCK_TOKENS } from '../kv-cache/kv-layout.ts';
import type { KvCachePool } from '../kv-cache/kv-pool.ts';
import type { KvCachePlacement } from './client.ts';
import type { Device } from './device.ts';
import { DropserveError } from './errors.ts';
import type { KvDtype } from './graph/kv-dtype.ts';
import { ModelSession, type ModelSessionOptions } from './graph/model-session.ts';
import type { ModelConfig } from './model/config.ts';
import type { ModelWeights } from './model/weights.ts';
import { resolveVariant, type VariantDefinition } from './runtime/variant.ts';

/**
 * Where the KV cache lives: `--kv-placement host|device`. On WebGPU it stays on the device unless
 * asked otherwise (the point of a GPU: no KV traffic per step); on the CPU EP "device" runs the same
 * device path with tensors in JS memory, which is how CI exercises it without a GPU.
 */
export function resolveKvPlacement(
  device: Device,
  requested: KvCachePlacement | undefined,
  variants: readonly VariantDefinition[],
): KvCachePlacement {
  const placement = requested ?? (device === 'webgpu' ? 'device' : 'host');
  if (placement === 'host') return 'host';
  if (device === 'cuda') {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      'KV resident on a CUDA device is not built yet (whether onnxruntime-node 1.30 keeps CUDA outputs on the device is untried); use --kv-placement host with --device cuda',
      { param: 'kv-placement' },
    );
  }
  const adaptive = variants.find((v) => v.adaptive);
  if (adaptive) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `variant ${adaptive.id} is adaptive: it chooses its drops from the prefill's hidden states, which a device-KV session does not give (onnxruntime-node 1.30 hands unfetched device outputs stale to the next run); use --kv-placement host`,
      { param: 'kv-placement' },
    );
  }
  return 'device';
}

/**
 * The KV pool of a placement. A device pool builds the small KV graphs of every variant's layout up
 * front (creating a session is async; arenas are added while serving).
 */
export async function createKvPool(options: {
  placement: KvCachePlacement;
  device: Device;
  config: ModelConfig;
  variants: readonly VariantDefinition[];
  budgetBytes: number;
  blockTokens?: number;
  kvDtype?: KvDtype;
}): Promise<KvCachePool> {
  const blockTokens = options.blockTokens ?? DEFAULT_KV_BLOCK_TOKENS;
  if (options.placement === 'host') {
    if (options.kvDtype === 'fp16') {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        '--kv-dtype fp16 keeps the KV cache in fp16 on the device; the host KV cache is fp32 (use --kv-placement device)',
        { param: 'kv-dtype' },
      );
    }
    return new HostKvCachePool({ budgetBytes: options.budgetBytes, blockTokens });
  }
  return DeviceKvCachePool.create({
    budgetBytes: options.budgetBytes,
    blockTokens,
    device: options.device,
    layouts: options.variants.map((v) => resolveVariant(v, options.config, options.kvDtype).kvLayout),
  });
}

/** Adaptive variants score their prompts from the prefill's hidden states: the graph must output them. */
export function needsHiddenStates(variants: readonly { adaptive?: unknown }[] = []): boolean {
  return variants.some((v) => v.adaptive !== undefined);
}

/**
 * The model session and the KV pool an engine runs on, made together because the placement decides
 * both: a device pool needs a session that leaves K/V on the device (and its dtype), and adaptive
 * variants need a session with hidden states. Used by the in-process and the worker engine alike.
 */
export async function createEngineRuntime(options: {
  config: ModelConfig;
  weights: ModelWeights;
  device: Device;
  variants: readonly VariantDefinition[];
  kvPlacement?: KvCachePlacement;
  kvDtype?: KvDtype;
  budgetBytes: number;
  blockTokens?: number;
  /** The rest of the session's options (threads, start-up clock, weight file, accuracy level). */
  session?: Omit<ModelSessionOptions, 'device' | 'kvOnDevice' | 'kvDtype' | 'outputHiddenStates'>;
}): Promise<{ runner: ModelSession; kvPool: KvCachePool }> {
  const placement = resolveKvPlacement(options.device, options.kvPlacement, options.variants);
  const runner = await ModelSession.create(options.config, options.weights, {
    ...options.session,
    device: options.device,
    kvOnDevice: placement === 'device',
    kvDtype: options.kvDtype,
    outputHiddenStates: needsHiddenStates(options.variants),
  });
  const kvPool = await createKvPool({
    placement,
    device: options.device,
    config: options.config,
    variants: options.variants,
    budgetBytes: options.budgetBytes,
    blockTokens: options.blockTokens,
    kvDtype: options.kvDtype,
  });
  return { runner, kvPool };
}
