import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { z } from 'zod';
import { apiUrl } from './openai-stream.ts';

/**
 * Reads GET /v1/variants (served variants with their KV cost and live load). Capacity planning uses
 * it for each variant's KV bytes/token and budget and for the peak number of running sequences;
 * a server without the route (or any OpenAI server that is not dropserve) simply yields null.
 */

export interface VariantInfo {
  id: string;
  base: string | null;
  dropAttention: number[];
  dropMlp: number[];
  kvBytesPerToken: number | null;
  kvBudgetBytes: number | null;
  kvCacheUsagePerc: number | null;
  requestsRunning: number | null;
  requestsWaiting: number | null;
  /** Shadow-scored top-1 agreement with the full model; null for the full model or when unscored. */
  agreement: number | null;
  /** Requests the agreement was measured on (0 when unscored). */
  agreementSamples: number;
  /** How the server admits sequences against its KV budget: "on-demand" or "worst-case" (null: not said). */
  kvAdmission: string | null;
  kvBlockTokens: number | null;
  /** Sequences preempted (KV freed, recomputed later) since the server started. */
  numPreemptions: number | null;
}

const finite = z.number().finite();
const variantSchema = z.looseObject({
  id: z.string(),
  base: z.string().optional(),
  drop_attention: z.array(finite).optional(),
  drop_mlp: z.array(finite).optional(),
  kv_bytes_per_token: finite.optional(),
  kv_cache_budget_bytes: finite.optional(),
  kv_budget_bytes: finite.optional(),
  kv_cache_usage_perc: finite.optional(),
  requests_running: finite.optional(),
  requests_waiting: finite.optional(),
  fidelity: z.looseObject({ samples: finite, agreement: finite }).nullable().optional(),
  kv_admission: z.string().optional(),
  kv_block_tokens: finite.optional(),
  num_preemptions: finite.optional(),
});

/** Accepts a bare array (dropserve) or an OpenAI-style `{data: [...]}` / `{variants: [...]}` wrapper. */
export function parseVariants(body: unknown): VariantInfo[] | null {
  const list = Array.isArray(body)
    ? body
    : typeof body === 'object' && body !== null
      ? ((body as { data?: unknown; variants?: unknown }).data ?? (body as { variants?: unknown }).variants)
      : undefined;
  if (!Array.isArray(list)) return null;
  const variants: VariantInfo[] = [];
  for (const item of list) {
    const parsed = variantSchema.safeParse(item);
    if (!parsed.success) continue; // one odd entry should not hide the others
    const v = parsed.data;
    variants.push({
      id: v.id,
      base: v.base ?? null,
      dropAttention: v.drop_attention ?? [],
      dropMlp: v.drop_mlp ?? [],
      kvBytesPerToken: v.kv_bytes_per_token ?? null,
      kvBudgetBytes: v.kv_cache_budget_bytes ?? v.kv_budget_bytes ?? null,
      kvCacheUsagePerc: v.kv_cache_usage_perc ?? null,
      requestsRunning: v.requests_running ?? null,
      requestsWaiting: v.requests_waiting ?? null,
      agreement: v.fidelity?.agreement ?? null,
      agreementSamples: v.fidelity?.samples ?? 0,
      kvAdmission: v.kv_admission ?? null,
      kvBlockTokens: v.kv_block_tokens ?? null,
      numPreemptions: v.num_preemptions ?? null,
    });
  }
  return variants;
}

export interface VariantsClientOptions {
  apiKey?: string;
  timeoutMs?: number;
}

/** The variants list, or null when the route is missing, unauthorised, slow or malformed. */
export async function fetchVariants(
  baseUrl: string,
  options: VariantsClientOptions = {},
): Promise<VariantInfo[] | null> {
  try {
    const response = await request(apiUrl(baseUrl, '/v1/variants'), {
      method: 'GET',
      headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
      signal: AbortSignal.timeout(options.timeoutMs ?? 2000),
    });
    if (response.statusCode !== 200) {
      await response.body.dump();
      return null;
    }
    return parseVariants(await response.body.json());
  } catch {
    return null;
  }
}

/** Peak load the server reported for one variant while polling. */
export interface VariantPeak {
  maxRunning: number | null;
  maxWaiting: number | null;
  maxKvCacheUsagePerc: number | null;
  samples: number;
}

export interface VariantsPoller {
  /** Stops polling and returns the peaks per variant id (empty when the route never answered). */
  stop(): Promise<Map<string, VariantPeak>>;
}

/** Polls /v1/variants every `intervalMs` (one request at a time) until stopped. */
export function pollVariants(
  baseUrl: string,
  intervalMs: number,
  options: VariantsClientOptions = {},
): VariantsPoller {
  const peaks = new Map<string, VariantPeak>();
  const controller = new AbortController();
  const record = (variants: VariantInfo[]): void => {
    for (const v of variants) {
      const peak = peaks.get(v.id) ?? {
        maxRunning: null,
        maxWaiting: null,
        maxKvCacheUsagePerc: null,
        samples: 0,
      };
      peak.maxRunning = maxOrNull(peak.maxRunning, v.requestsRunning);
      peak.maxWaiting = maxOrNull(peak.maxWaiting, v.requestsWaiting);
      peak.maxKvCacheUsagePerc = maxOrNull(peak.maxKvCacheUsagePerc, v.kvCacheUsagePerc);
      peak.samples++;
      peaks.set(v.id, peak);
    }
  };
  const loop = (async (): Promise<void> => {
    while (!controller.signal.aborted) {
      const variants = await fetchVariants(baseUrl, { ...options, timeoutMs: options.timeoutMs ?? 1000 });
      if (variants) record(variants);
      try {
        await sleep(intervalMs, undefined, { signal: controller.signal });
      } catch {
        return;
      }
    }
  })();
  return {
    async stop(): Promise<Map<string, VariantPeak>> {
      controller.abort();
      await loop;
      return peaks;
    },
  };
}

function maxOrNull(current: number | null, sample: number | null): number | null {
  if (sample === null) return current;
  return current === null ? sample : Math.max(current, sample);
}
