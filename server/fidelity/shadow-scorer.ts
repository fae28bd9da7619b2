import type { EngineClient } from '../../engine/client.ts';
import { type PositionFidelity, positionFidelity, type RequestFidelity, summarize } from './fidelity-math.ts';

/** A finished pruned request, as the transports hand it over. */
export interface FinishedGeneration {
  variant: string;
  promptTokenIds: number[];
  completionTokenIds: number[];
  /** The pruned model's log-softmax rows, one per completion token (recordDistributions). */
  distributions: (Float32Array | undefined)[];
}

export interface VariantFidelity {
  /** Requests scored. */
  samples: number;
  /** Token positions scored. */
  positions: number;
  /** Position-weighted means over all scored requests. */
  agreement: number;
  klMean: number;
  deltaNllMean: number;
}

export interface ShadowScorerOptions {
  engine: EngineClient;
  /** Share of finished pruned requests to re-score, 0..1. */
  rate: number;
  /** Scores in flight beyond this are dropped (counted), so shadow work never piles up. */
  maxInFlight?: number;
  /** Random source for sampling (tests pass a deterministic one). */
  random?: () => number;
  onScored?: (variant: string, result: RequestFidelity, positions: PositionFidelity[]) => void;
  onDropped?: (variant: string, reason: 'busy' | 'error') => void;
}

/**
 * Live fidelity read-out: a sampled share of finished pruned requests is re-scored by the full
 * model in one teacher-forced pass at background priority. The engine runs background scores only
 * when no interactive request waits; on top of that, a busy queue or too many scores in flight
 * drops the sample (counted) instead of delaying anyone.
 */
export class ShadowScorer {
  readonly rate: number;
  readonly #engine: EngineClient;
  readonly #maxInFlight: number;
  readonly #random: () => number;
  readonly #options: ShadowScorerOptions;
  readonly #totals = new Map<
    string,
    { samples: number; positions: number; agree: number; kl: number; dnll: number }
  >();
  #inFlight = 0;
  #counter = 0;

  constructor(options: ShadowScorerOptions) {
    if (!(options.rate >= 0 && options.rate <= 1))
      throw new RangeError(`shadow rate must be in [0, 1], got ${options.rate}`);
    this.rate = options.rate;
    this.#engine = options.engine;
    this.#maxInFlight = options.maxInFlight ?? 4;
    this.#random = options.random ?? Math.random;
    this.#options = options;
  }

  /** Whether the next request of a variant should record distributions for scoring. */
  shouldSample(variant: string): boolean {
    return this.rate > 0 && variant !== this.#engine.model.name && this.#random() < this.rate;
  }

  /** Queues a sampled generation for scoring; resolves when scored or dropped. */
  async submit(generation: FinishedGeneration): Promise<RequestFidelity | null> {
    if (generation.completionTokenIds.length === 0) return null;
    const waiting = this.#engine.variants().reduce((s, v) => s + v.requestsWaiting, 0);
    if (waiting > 0 || this.#inFlight >= this.#maxInFlight) {
      this.#options.onDropped?.(generation.variant, 'busy');
      return null;
    }
    this.#inFlight++;
    try {
      const tokens = [...generation.promptTokenIds, ...generation.completionTokenIds];
      const scored = await this.#engine.score({
        requestId: `shadow-${this.#counter++}`,
        variant: this.#engine.model.name,
        tokenIds: tokens,
        fromIndex: generation.promptTokenIds.length,
        priority: 'background',
        returnDistributions: true,
      });
      const positions = generation.completionTokenIds.map((token, i) =>
        positionFidelity(scored.distributions![i]!, generation.distributions[i], token),
      );
      const result = summarize(positions);
      this.#accumulate(generation.variant, positions);
      this.#options.onScored?.(generation.variant, result, positions);
      return result;
    } catch {
      this.#options.onDropped?.(generation.variant, 'error');
      return null;
    } finally {
      this.#inFlight--;
    }
  }

  fidelity(variant: string): VariantFidelity {
    const t = this.#totals.get(variant);
    if (!t || t.positions === 0)
      return { samples: 0, positions: 0, agreement: 0, klMean: 0, deltaNllMean: 0 };
    return {
      samples: t.samples,
      positions: t.positions,
      agreement: t.agree / t.positions,
      klMean: t.kl / t.positions,
      deltaNllMean: t.dnll / t.positions,
    };
  }

  #accumulate(variant: string, positions: PositionFidelity[]): void {
    const t = this.#totals.get(variant) ?? { samples: 0, positions: 0, agree: 0, kl: 0, dnll: 0 };
    t.samples++;
    for (const p of positions) {
      t.positions++;
      t.agree += p.agrees ? 1 : 0;
      t.kl += Number.isFinite(p.kl) ? p.kl : 0;
      t.dnll += p.deltaNll;
    }
    this.#totals.set(variant, t);
  }
}
