import { DeviceKvCachePool } from '../kv-cache/device-pool.ts';
import { HostKvCachePool } from '../kv-cache/host-pool.ts';
import { DEFAULT_KV_BLOCK_TOKENS } from '../kv-cache/kv-layout.ts';
import type { KvCachePool } from '../kv-cache/kv-pool.ts';
import type { KvCachePlacement } from './client.ts';
import type { Device } from './device.ts';
import { DropserveError } from './errors.ts';
import type { KvDtype } from './graph/kv-dtype.ts';
import type { ModelConfig } from './model/config.ts';
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
