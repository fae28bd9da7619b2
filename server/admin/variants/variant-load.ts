import type { VariantInfo } from '../../../engine/client.ts';

/** What a variant drops and its live load, in snake_case: the part GET /v1/variants and gRPC ListModels share. */
export interface VariantLoadView {
  id: string;
  base: string;
  drop_attention: number[];
  drop_mlp: number[];
  kv_bytes_per_token: number;
  /** Weight bytes one decoded token reads (engine/quant/weight-bytes.ts); 0 when the engine does not say. */
  weight_bytes_per_token: number;
  weight_format: string;
  /** kv_cache_bytes_used / kv_cache_budget_bytes. */
  kv_cache_usage_perc: number;
  /** Bytes of the KV blocks live tokens occupy. */
  kv_cache_bytes_used: number;
  /** Bytes of the K/V buffers this variant holds now (padding and spare rows included). */
  kv_cache_bytes_allocated: number;
  kv_cache_budget_bytes: number;
  kv_block_tokens: number;
  kv_cache_placement: string;
  /** Decode steps and the bytes they moved between host and device (0 on the CPU EP). */
  device_transfer?: { decode_steps: number; host_to_device_bytes: number; device_to_host_bytes: number };
  kv_admission: string;
  /** Sequences preempted (KV freed, recomputed later) since start. */
  num_preemptions: number;
  requests_running: number;
  requests_waiting: number;
  /**
   * Only on input-adaptive variants: how many attention / MLP sublayers each prompt drops, and how
   * many distinct drop sets the prompts so far chose (each decodes as its own batch).
   */
  adaptive?: AdaptiveView;
}

export interface AdaptiveView {
  attention: number;
  mlp: number;
  distinct_masks: number;
}

/** One mapping from VariantInfo to wire names, so the HTTP and gRPC views cannot drift apart. */
export function variantLoadView(v: VariantInfo): VariantLoadView {
  return {
    id: v.id,
    base: v.base,
    drop_attention: [...v.spec.dropAttention],
    drop_mlp: [...v.spec.dropMlp],
    kv_bytes_per_token: v.kvBytesPerToken,
    weight_bytes_per_token: v.weightBytesPerToken ?? 0,
    weight_format: v.weightFormat ?? 'fp32',
    kv_cache_usage_perc: v.kvCacheUsagePerc,
    kv_cache_bytes_used: v.kvCacheBytesUsed,
    kv_cache_bytes_allocated: v.kvCacheBytesAllocated,
    kv_cache_budget_bytes: v.kvCacheBudgetBytes,
    kv_block_tokens: v.kvBlockTokens,
    kv_cache_placement: v.kvCachePlacement,
    kv_admission: v.kvAdmission,
    num_preemptions: v.numPreemptions,
    ...(v.deviceTransfer
      ? {
          device_transfer: {
            decode_steps: v.deviceTransfer.decodeSteps,
            host_to_device_bytes: v.deviceTransfer.hostToDeviceBytes,
            device_to_host_bytes: v.deviceTransfer.deviceToHostBytes,
          },
        }
      : {}),
    requests_running: v.requestsRunning,
    requests_waiting: v.requestsWaiting,
    ...(v.adaptive ? { adaptive: adaptiveView(v.adaptive) } : {}),
  };
}

export function adaptiveView(adaptive: NonNullable<VariantInfo['adaptive']>): AdaptiveView {
  return { attention: adaptive.attention, mlp: adaptive.mlp, distinct_masks: adaptive.distinctMasks };
}
