/**
 * Per-variant rolling latency windows for the live comparison in GET /v1/variants and the dashboard.
 * Prometheus histograms answer "p99 over the last 5 minutes" only through a Prometheus server; these
 * answer it from the process itself, from the same finished requests ServerMetrics observes.
 *
 * Window: requests that finished in the last `windowMs` (default 5 minutes), at most the last
 * `maxRequests` (default 1000) per variant, and at most the last `maxGaps` (default 20 000)
 * inter-token gaps per variant — so memory stays bounded under any load, and under heavy load the
 * window is "the last 1000 requests" rather than 5 minutes.
 *
 * Definitions follow ServerMetrics (vLLM's): TTFT from transport arrival to the first token, ITL =
 * every gap between consecutive tokens, TPOT = (last − first token) / (tokens − 1) per request,
 * E2E = arrival to finish. Percentiles interpolate linearly between closest ranks.
 */
export const DEFAULT_LATENCY_WINDOW_MS = 5 * 60_000;
export const DEFAULT_LATENCY_MAX_REQUESTS = 1000;
export const DEFAULT_LATENCY_MAX_GAPS = 20_000;

export interface LatencySample {
  /** Epoch ms the transport received the request. */
  startMs: number;
  finishedMs: number;
  ttftMs?: number;
  e2eMs?: number;
  /** Only for requests with ≥ 2 output tokens. */
  tpotMs?: number;
  /** Every gap between consecutive output tokens. */
  itlGapsMs: readonly number[];
  outputTokens: number;
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
}

/** The `latency` object of GET /v1/variants (snake_case, as the API). */
export interface LatencySummary {
  /** Length of the window in seconds (the configured span, not how much of it has data). */
  window_s: number;
  /** Requests in the window. */
  requests: number;
  ttft_ms: Percentiles | null;
  itl_ms: Percentiles | null;
  tpot_ms: Percentiles | null;
  e2e_ms: Percentiles | null;
  /**
   * Output tokens of the window's requests per second of wall time they cover: from the earliest
   * start among them (at most window_s ago) to now. What the variant delivered, all users together.
   */
  output_tokens_per_s: number;
}

export interface RollingLatencyOptions {
  windowMs?: number;
  maxRequests?: number;
  maxGaps?: number;
  /** Epoch ms clock (tests pass a fake one). */
  now?: () => number;
}

/** Fixed-capacity FIFO of numbers with a timestamp each; the oldest is overwritten when full. */
class TimedRing {
  readonly #values: Float64Array;
  readonly #times: Float64Array;
  #head = 0;
  #size = 0;

  constructor(capacity: number) {
    this.#values = new Float64Array(capacity);
    this.#times = new Float64Array(capacity);
  }

  get size(): number {
    return this.#size;
  }

  push(timeMs: number, value: number): void {
    const capacity = this.#values.length;
    const at = (this.#head + this.#size) % capacity;
    this.#values[at] = value;
    this.#times[at] = timeMs;
    if (this.#size < capacity) this.#size++;
    else this.#head = (this.#head + 1) % capacity;
  }

  /** Forgets entries older than cutoffMs (pushes arrive in time order, so they sit at the head). */
  expire(cutoffMs: number): void {
    while (this.#size > 0 && this.#times[this.#head]! < cutoffMs) {
      this.#head = (this.#head + 1) % this.#values.length;
      this.#size--;
    }
  }

  values(): Float64Array {
    const out = new Float64Array(this.#size);
    for (let i = 0; i < this.#size; i++) out[i] = this.#values[(this.#head + i) % this.#values.length]!;
    return out;
  }
}

interface VariantWindow {
  /** Per request: finish time → value; NaN where the request has no value. */
  ttft: TimedRing;
  tpot: TimedRing;
  e2e: TimedRing;
  tokens: TimedRing;
  starts: TimedRing;
  gaps: TimedRing;
}

export class RollingLatency {
  readonly windowMs: number;
  readonly #maxRequests: number;
  readonly #maxGaps: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, VariantWindow>();

  constructor(options: RollingLatencyOptions = {}) {
    this.windowMs = options.windowMs ?? DEFAULT_LATENCY_WINDOW_MS;
    this.#maxRequests = options.maxRequests ?? DEFAULT_LATENCY_MAX_REQUESTS;
    this.#maxGaps = options.maxGaps ?? DEFAULT_LATENCY_MAX_GAPS;
    this.#now = options.now ?? (() => performance.timeOrigin + performance.now());
    if (!(this.windowMs > 0)) throw new RangeError(`windowMs must be > 0, got ${this.windowMs}`);
    for (const [name, n] of [
      ['maxRequests', this.#maxRequests],
      ['maxGaps', this.#maxGaps],
    ] as const) {
      if (!(Number.isInteger(n) && n > 0))
        throw new RangeError(`${name} must be a positive integer, got ${n}`);
    }
  }

  observe(variant: string, sample: LatencySample): void {
    let w = this.#windows.get(variant);
    if (!w) {
      const ring = (): TimedRing => new TimedRing(this.#maxRequests);
      w = {
        ttft: ring(),
        tpot: ring(),
        e2e: ring(),
        tokens: ring(),
        starts: ring(),
        gaps: new TimedRing(this.#maxGaps),
      };
      this.#windows.set(variant, w);
    }
    const t = sample.finishedMs;
    w.ttft.push(t, sample.ttftMs ?? Number.NaN);
    w.tpot.push(t, sample.tpotMs ?? Number.NaN);
    w.e2e.push(t, sample.e2eMs ?? Number.NaN);
    w.tokens.push(t, sample.outputTokens);
    w.starts.push(t, sample.startMs);
    for (const gap of sample.itlGapsMs) w.gaps.push(t, gap);
  }

  summary(variant: string): LatencySummary {
    const windowS = this.windowMs / 1000;
    const w = this.#windows.get(variant);
    const empty: LatencySummary = {
      window_s: windowS,
      requests: 0,
      ttft_ms: null,
      itl_ms: null,
      tpot_ms: null,
      e2e_ms: null,
      output_tokens_per_s: 0,
    };
    if (!w) return empty;
    const now = this.#now();
    const cutoff = now - this.windowMs;
    for (const ring of [w.ttft, w.tpot, w.e2e, w.tokens, w.starts, w.gaps]) ring.expire(cutoff);
    if (w.tokens.size === 0) return empty;
    const tokens = w.tokens.values().reduce((s, n) => s + n, 0);
    const earliestStart = Math.max(cutoff, Math.min(...w.starts.values()));
    // A window that began a moment ago would make a huge rate of a few tokens: at least 1 s.
    const spanS = Math.max(1, (now - earliestStart) / 1000);
    return {
      window_s: windowS,
      requests: w.tokens.size,
      ttft_ms: percentiles(w.ttft.values()),
      itl_ms: percentiles(w.gaps.values()),
      tpot_ms: percentiles(w.tpot.values()),
      e2e_ms: percentiles(w.e2e.values()),
      output_tokens_per_s: tokens / spanS,
    };
  }
}

/** p50/p90/p99 of the finite values, linear between closest ranks; null when there are none. */
export function percentiles(values: Float64Array): Percentiles | null {
  const sorted = values.filter((v) => Number.isFinite(v)).sort();
  if (sorted.length === 0) return null;
  const at = (q: number): number => {
    const rank = q * (sorted.length - 1);
    const lo = Math.floor(rank);
    const hi = Math.min(sorted.length - 1, lo + 1);
    return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
  };
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}
