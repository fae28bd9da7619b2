import { Hono } from 'hono';
import type { EngineClient } from '../../../engine/client.ts';
import type { VariantFidelity } from '../../fidelity/shadow-scorer.ts';
import type { AppEnv } from '../../http/env.ts';
import type { LatencySummary } from '../../metrics/latency-window.ts';
import type { ServerMetrics } from '../../metrics/metrics.ts';
import type { VariantLoadView } from './variant-load.ts';
import { variantLoadView } from './variant-load.ts';

/** Live accuracy against the full model, over every shadow-scored request since start. */
export interface FidelityView {
  /** Requests scored. */
  samples: number;
  /** Generated positions scored (the means below are per position). */
  positions: number;
  /** Share of positions where the full model's top-1 is the variant's token. */
  agreement: number;
  /** Mean KL(full ‖ variant), nats. */
  kl_mean: number;
  /** Mean full-model NLL of the variant's token minus that of the full model's own top-1, nats. */
  delta_nll_mean: number;
}

/** GET /v1/variants: each served variant with what it drops and its live load, in snake_case. */
export interface VariantView extends VariantLoadView {
  /** Null for the full model, and for a variant never sampled (or with shadow scoring off). */
  fidelity: FidelityView | null;
  /** Rolling window of completed requests (see server/metrics/latency-window.ts). */
  latency: LatencySummary;
}

export interface VariantsDeps {
  metrics: ServerMetrics;
  /** The shadow scorer's totals for a variant; absent while shadow scoring is off. */
  fidelity?: (variant: string) => VariantFidelity | undefined;
}

export function listVariants(engine: EngineClient, deps: VariantsDeps): VariantView[] {
  return engine.variants().map((v) => ({
    ...variantLoadView(v),
    fidelity: v.id === v.base ? null : fidelityView(deps.fidelity?.(v.id)),
    latency: deps.metrics.latencyOf(v.id),
  }));
}

function fidelityView(f: VariantFidelity | undefined): FidelityView | null {
  if (!f || f.samples === 0) return null;
  return {
    samples: f.samples,
    positions: f.positions,
    agreement: f.agreement,
    kl_mean: f.klMean,
    delta_nll_mean: f.deltaNllMean,
  };
}

export function variantsRoute(deps: VariantsDeps): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/v1/variants', (c) => c.json(listVariants(c.get('engine'), deps)));
}
