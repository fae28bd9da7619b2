import { Hono } from 'hono';
import type { EngineClient } from '../../../engine/client.ts';
import type { AppEnv } from '../../http/env.ts';

/** GET /v1/variants: each served variant with what it drops and its live load, in snake_case. */
export interface VariantView {
  id: string;
  base: string;
  drop_attention: number[];
  drop_mlp: number[];
  kv_bytes_per_token: number;
  kv_cache_usage_perc: number;
  kv_cache_bytes_used: number;
  kv_cache_budget_bytes: number;
  requests_running: number;
  requests_waiting: number;
}

export function listVariants(engine: EngineClient): VariantView[] {
  return engine.variants().map((v) => ({
    id: v.id,
    base: v.base,
    drop_attention: v.spec.dropAttention,
    drop_mlp: v.spec.dropMlp,
    kv_bytes_per_token: v.kvBytesPerToken,
    kv_cache_usage_perc: v.kvCacheUsagePerc,
    kv_cache_bytes_used: v.kvCacheBytesUsed,
    kv_cache_budget_bytes: v.kvCacheBudgetBytes,
    requests_running: v.requestsRunning,
    requests_waiting: v.requestsWaiting,
  }));
}

export function variantsRoute(): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/v1/variants', (c) => c.json(listVariants(c.get('engine'))));
}
