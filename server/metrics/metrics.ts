import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineClient, VariantInfo } from '../../engine/client.ts';
import type { TextFinish } from '../../engine/output/text-generation.ts';
import {
  type LatencySample,
  type LatencySummary,
  RollingLatency,
  type RollingLatencyOptions,
} from './latency-window.ts';

/**
 * Prometheus metrics with vLLM's names, definitions and bucket sets under a `dropserve:` prefix, so
 * vLLM dashboards and autoscaling recipes carry over. Labels: `variant` (only served variant names,
 * so cardinality is bounded; vLLM's `model_name`) and `transport`. Engine gauges and counters are
 * read from engine.variants() at scrape time (the worker sends fresh VariantInfo with every round).
 *
 * Definitions (as vLLM v1): TTFT from arrival at the transport (tokenization included) to the first
 * token; queue = arrival at the engine → scheduled; prefill = scheduled → first token; decode = first →
 * last token; inference = scheduled → last token; TPOT = decode / (tokens − 1); inter-token latency =
 * every gap between consecutive tokens.
 */
const PREFIX = 'dropserve:';

// vLLM's bucket sets (vllm/v1/metrics/loggers.py).
const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
  80.0, 160.0, 640.0, 2560.0,
];
const TOKEN_LATENCY_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
const REQUEST_LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
  960.0, 1920.0, 7680.0,
];

// Fidelity of a pruned variant against the full model (server/fidelity): per scored request.
const AGREEMENT_BUCKETS = Array.from({ length: 20 }, (_, i) => Number(((i + 1) * 0.05).toFixed(2)));
// Nats; means per request span from ~1e-4 (nearly identical) to several nats (unrelated).
const NATS_BUCKETS = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10];

/** vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, … up to max. */
export function buckets125(max: number): number[] {
  const out: number[] = [];
  for (let exp = 1; ; exp *= 10) {
    for (const m of [1, 2, 5]) {
      if (m * exp > max) return out;
      out.push(m * exp);
    }
  }
}

export type Transport = 'http' | 'grpc';

export interface ObservedRequest {
  variant: string;
  transport: Transport;
  finish: TextFinish;
  /** Epoch ms the transport received the request; TTFT and e2e start here (default: engine arrival). */
  receivedMs?: number;
  /** The request's max_tokens, for the max_tokens histogram. */
  maxTokens?: number;
}

export interface ServerMetricsOptions {
  /** Also export Node process metrics (CPU, memory, event loop lag). Default true. */
  collectProcessMetrics?: boolean;
  /** Context length, for the token-count bucket sets (default 4096). */
  maxModelLen?: number;
  /** The rolling windows behind GET /v1/variants' `latency` (default: 5 min, last 1000 requests). */
  latencyWindow?: RollingLatencyOptions;
}

/** One shadow-scored request's means (server/fidelity). */
export interface ObservedFidelity {
  agreement: number;
  klMean: number;
  deltaNllMean: number;
}

export type ShadowDropReason = 'busy' | 'error' | 'unfinished' | 'empty';

type EngineSource = EngineClient | (() => EngineClient | undefined);

export class ServerMetrics {
  readonly registry: Registry;
  readonly #engine: () => EngineClient | undefined;
  readonly #ttft: Histogram<'variant' | 'transport'>;
  readonly #itl: Histogram<'variant' | 'transport'>;
  readonly #tpot: Histogram<'variant' | 'transport'>;
  readonly #e2e: Histogram<'variant' | 'transport'>;
  readonly #queue: Histogram<'variant' | 'transport'>;
  readonly #prefill: Histogram<'variant' | 'transport'>;
  readonly #decode: Histogram<'variant' | 'transport'>;
  readonly #inference: Histogram<'variant' | 'transport'>;
  readonly #promptTokensHist: Histogram<'variant' | 'transport'>;
  readonly #generationTokensHist: Histogram<'variant' | 'transport'>;
  readonly #maxTokensHist: Histogram<'variant' | 'transport'>;
  readonly #promptTokens: Counter<'variant' | 'transport'>;
  readonly #generationTokens: Counter<'variant' | 'transport'>;
  readonly #success: Counter<'variant' | 'transport' | 'finished_reason'>;
  readonly #rejected: Counter<'transport' | 'reason'>;
  readonly #agreement: Histogram<'variant'>;
  readonly #kl: Histogram<'variant'>;
  readonly #deltaNll: Histogram<'variant'>;
  readonly #shadowRequests: Counter<'variant'>;
  readonly #shadowDropped: Counter<'variant' | 'reason'>;
  readonly #assignments: Counter<'experiment' | 'variant'>;
  readonly #guardrailTripped: Gauge<'experiment' | 'arm'>;
  readonly #completedListeners: ((variant: string, sample: LatencySample) => void)[] = [];
  /** Per-variant rolling latency windows, fed by observeRequest. */
  readonly latency: RollingLatency;
  #servedVariants: Set<string> | undefined;

  /**
   * `engine` may be a getter: the HTTP server starts (and /metrics answers) before the engine exists.
   */
  constructor(engine: EngineSource, options: ServerMetricsOptions = {}) {
    this.#engine = typeof engine === 'function' ? engine : () => engine;
    this.registry = new Registry();
    if (options.collectProcessMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    const maxModelLen = options.maxModelLen ?? 4096;
    const registers = [this.registry];
    const labelNames = ['variant', 'transport'] as const;
    const histogram = (name: string, help: string, buckets: number[]): Histogram<'variant' | 'transport'> =>
      new Histogram({ name: PREFIX + name, help, labelNames, buckets, registers });
    this.#ttft = histogram(
      'time_to_first_token_seconds',
      'Histogram of time to first token in seconds.',
      TTFT_BUCKETS,
    );
    this.#itl = histogram(
      'inter_token_latency_seconds',
      'Histogram of inter-token latency in seconds.',
      TOKEN_LATENCY_BUCKETS,
    );
    this.#tpot = histogram(
      'request_time_per_output_token_seconds',
      'Histogram of time_per_output_token_seconds per request.',
      TOKEN_LATENCY_BUCKETS,
    );
    this.#e2e = histogram(
      'e2e_request_latency_seconds',
      'Histogram of e2e request latency in seconds.',
      REQUEST_LATENCY_BUCKETS,
    );
    this.#queue = histogram(
      'request_queue_time_seconds',
      'Histogram of time spent in WAITING phase for request.',
      REQUEST_LATENCY_BUCKETS,
    );
    this.#prefill = histogram(
      'request_prefill_time_seconds',
      'Histogram of time spent in PREFILL phase for request.',
      REQUEST_LATENCY_BUCKETS,
    );
    this.#decode = histogram(
      'request_decode_time_seconds',
      'Histogram of time spent in DECODE phase for request.',
      REQUEST_LATENCY_BUCKETS,
    );
    this.#inference = histogram(
      'request_inference_time_seconds',
      'Histogram of time spent in RUNNING phase for request.',
      REQUEST_LATENCY_BUCKETS,
    );
    const tokenBuckets = buckets125(maxModelLen);
    this.#promptTokensHist = histogram(
      'request_prompt_tokens',
      'Number of prefill tokens processed.',
      tokenBuckets,
    );
    this.#generationTokensHist = histogram(
      'request_generation_tokens',
      'Number of generation tokens processed.',
      tokenBuckets,
    );
    this.#maxTokensHist = histogram(
      'request_params_max_tokens',
      'Histogram of the max_tokens request parameter.',
      tokenBuckets,
    );
    this.#promptTokens = new Counter({
      name: `${PREFIX}prompt_tokens_total`,
      help: 'Number of prefill tokens processed.',
      labelNames,
      registers,
    });
    this.#generationTokens = new Counter({
      name: `${PREFIX}generation_tokens_total`,
      help: 'Number of generation tokens processed.',
      labelNames,
      registers,
    });
    this.#success = new Counter({
      name: `${PREFIX}request_success_total`,
      help: 'Count of finished requests by finish reason (stop, length, abort, error).',
      labelNames: ['variant', 'transport', 'finished_reason'],
      registers,
    });
    this.#rejected = new Counter({
      name: `${PREFIX}request_rejected_total`,
      help: 'Requests answered with an error before generating (reason: the error code, e.g. server_overloaded).',
      labelNames: ['transport', 'reason'],
      registers,
    });
    const fidelityHistogram = (name: string, help: string, buckets: number[]): Histogram<'variant'> =>
      new Histogram({ name: PREFIX + name, help, labelNames: ['variant'], buckets, registers });
    this.#agreement = fidelityHistogram(
      'fidelity_top1_agreement',
      "Per shadow-scored request: share of generated positions where the full model's top-1 token is the variant's token.",
      AGREEMENT_BUCKETS,
    );
    this.#kl = fidelityHistogram(
      'fidelity_kl',
      'Per shadow-scored request: mean KL(full || variant) over generated positions, in nats.',
      NATS_BUCKETS,
    );
    this.#deltaNll = fidelityHistogram(
      'fidelity_delta_nll',
      "Per shadow-scored request: mean of the full model's NLL of the variant's token minus its NLL of its own top-1, in nats.",
      NATS_BUCKETS,
    );
    this.#shadowRequests = new Counter({
      name: `${PREFIX}shadow_requests_total`,
      help: 'Finished pruned-variant requests sampled for shadow scoring by the full model.',
      labelNames: ['variant'],
      registers,
    });
    this.#shadowDropped = new Counter({
      name: `${PREFIX}shadow_dropped_total`,
      help: 'Sampled requests not scored (reason: busy = interactive work waiting or too many scores in flight, error, unfinished = the request did not complete, empty = it generated no token).',
      labelNames: ['variant', 'reason'],
      registers,
    });
    this.#assignments = new Counter({
      name: `${PREFIX}experiment_assignments_total`,
      help: 'Requests to an A/B experiment, by the variant they were assigned to.',
      labelNames: ['experiment', 'variant'],
      registers,
    });
    this.#guardrailTripped = new Gauge({
      name: `${PREFIX}experiment_guardrail_tripped`,
      help: 'Experiment arms whose guardrail tripped (1): the arm gets no new traffic, its users go to the control arm.',
      labelNames: ['experiment', 'arm'],
      registers,
    });
    this.latency = new RollingLatency(options.latencyWindow);
    this.#registerEngineGauges(registers);
  }

  /** Records one finished sequence (one choice). Call it for every finish, aborts included. */
  observeRequest(r: ObservedRequest): void {
    const labels = { variant: this.#variantLabel(r.variant), transport: r.transport };
    const { finish } = r;
    const t = finish.timings;
    const seconds = (fromMs: number | undefined, toMs: number | undefined): number | undefined =>
      fromMs === undefined || toMs === undefined ? undefined : Math.max(0, toMs - fromMs) / 1000;
    const observe = (h: Histogram<'variant' | 'transport'>, value: number | undefined): void => {
      if (value !== undefined) h.observe(labels, value);
    };
    const startMs = r.receivedMs ?? t.arrivalMs;
    const firstTokenMs = t.firstTokenMs ?? finish.tokenTimesMs[0];
    const lastTokenMs = t.lastTokenMs ?? finish.tokenTimesMs.at(-1);
    const numTokens = finish.usage.completionTokens;

    this.#success.inc({ ...labels, finished_reason: finish.reason });
    this.#promptTokens.inc(labels, finish.usage.promptTokens);
    this.#generationTokens.inc(labels, numTokens);
    this.#promptTokensHist.observe(labels, finish.usage.promptTokens);
    this.#generationTokensHist.observe(labels, numTokens);
    if (r.maxTokens !== undefined) this.#maxTokensHist.observe(labels, r.maxTokens);
    observe(this.#ttft, seconds(startMs, firstTokenMs));
    for (let i = 1; i < finish.tokenTimesMs.length; i++) {
      this.#itl.observe(labels, Math.max(0, finish.tokenTimesMs[i]! - finish.tokenTimesMs[i - 1]!) / 1000);
    }
    const decodeSeconds = seconds(firstTokenMs, lastTokenMs);
    if (decodeSeconds !== undefined && numTokens > 1)
      this.#tpot.observe(labels, decodeSeconds / (numTokens - 1));
    observe(this.#e2e, seconds(startMs, t.finishedMs));
    observe(this.#queue, seconds(t.arrivalMs, t.scheduledMs));
    observe(this.#prefill, seconds(t.scheduledMs, firstTokenMs));
    observe(this.#decode, decodeSeconds);
    observe(this.#inference, seconds(t.scheduledMs, lastTokenMs));
    // The live windows describe completed requests; aborts and failures would skew them.
    if (labels.variant !== 'unknown' && (finish.reason === 'stop' || finish.reason === 'length')) {
      const ms = (s: number | undefined): number | undefined => (s === undefined ? undefined : s * 1000);
      const gaps: number[] = [];
      for (let i = 1; i < finish.tokenTimesMs.length; i++) {
        gaps.push(Math.max(0, finish.tokenTimesMs[i]! - finish.tokenTimesMs[i - 1]!));
      }
      const sample: LatencySample = {
        startMs,
        finishedMs: t.finishedMs,
        ttftMs: ms(seconds(startMs, firstTokenMs)),
        e2eMs: ms(seconds(startMs, t.finishedMs)),
        tpotMs:
          decodeSeconds !== undefined && numTokens > 1 ? (decodeSeconds * 1000) / (numTokens - 1) : undefined,
        itlGapsMs: gaps,
        outputTokens: numTokens,
      };
      this.latency.observe(labels.variant, sample);
      for (const listener of this.#completedListeners) listener(labels.variant, sample);
    }
  }

  /** Hears every completed (stop/length) request of a served variant, as the latency windows do. */
  onCompletedRequest(listener: (variant: string, sample: LatencySample) => void): void {
    this.#completedListeners.push(listener);
  }

  /** An experiment arm's guardrail tripped: it is drained. */
  observeGuardrailTripped(experiment: string, arm: string): void {
    this.#guardrailTripped.set({ experiment, arm: this.#variantLabel(arm) }, 1);
  }

  /**
   * A request whose client went away before the engine took it (while its body was read, say):
   * counted as finished with reason "abort", like an abort during generation, so that every
   * accepted request ends in exactly one outcome. `variant` is "unknown" when it was not yet known.
   */
  observeAbortedBeforeStart(r: { transport: Transport; variant?: string }): void {
    const variant = r.variant === undefined ? 'unknown' : this.#variantLabel(r.variant);
    this.#success.inc({ variant, transport: r.transport, finished_reason: 'abort' });
  }

  /** The rolling latency summary of one variant (GET /v1/variants). */
  latencyOf(variant: string): LatencySummary {
    return this.latency.summary(variant);
  }

  /** One shadow-scored request of a variant. */
  observeFidelity(variant: string, fidelity: ObservedFidelity): void {
    const labels = { variant: this.#variantLabel(variant) };
    this.#agreement.observe(labels, fidelity.agreement);
    if (Number.isFinite(fidelity.klMean)) this.#kl.observe(labels, fidelity.klMean);
    this.#deltaNll.observe(labels, fidelity.deltaNllMean);
  }

  /** A finished request was sampled and handed to the shadow scorer. */
  observeShadowRequest(variant: string): void {
    this.#shadowRequests.inc({ variant: this.#variantLabel(variant) });
  }

  observeShadowDropped(variant: string, reason: ShadowDropReason): void {
    this.#shadowDropped.inc({ variant: this.#variantLabel(variant), reason });
  }

  /** A request to an experiment was assigned to a variant. */
  observeAssignment(experiment: string, variant: string): void {
    this.#assignments.inc({ experiment, variant: this.#variantLabel(variant) });
  }

  /** Counts a request refused before generation (overload, bad parameters, auth). */
  observeRejected(r: { transport: Transport; reason: string }): void {
    this.#rejected.inc(r);
  }

  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  /** Unknown names never become label values: a typo in a client must not grow the series count. */
  #variantLabel(variant: string): string {
    // The served set is fixed once the engine exists; read it once.
    this.#servedVariants ??= this.#readServedVariants();
    return this.#servedVariants?.has(variant) ? variant : 'unknown';
  }

  #readServedVariants(): Set<string> | undefined {
    const engine = this.#engine();
    return engine ? new Set(engine.variants().map((v) => v.id)) : undefined;
  }

  #registerEngineGauges(registers: Registry[]): void {
    const engine = this.#engine;
    const gauge = (name: string, help: string, value: (v: VariantInfo) => number): void => {
      new Gauge({
        name: PREFIX + name,
        help,
        labelNames: ['variant'],
        registers,
        collect(this: Gauge<'variant'>) {
          this.reset();
          for (const v of engine()?.variants() ?? []) this.set({ variant: v.id }, value(v));
        },
      });
    };
    gauge('num_requests_running', 'Number of requests in model execution batches.', (v) => v.requestsRunning);
    gauge('num_requests_waiting', 'Number of requests waiting to be processed.', (v) => v.requestsWaiting);
    gauge(
      'kv_cache_usage_perc',
      "KV-cache usage: share of the KV budget the blocks of this variant's live tokens hold (1 = 100%).",
      (v) => v.kvCacheUsagePerc,
    );
    gauge(
      'kv_cache_bytes_per_token',
      'KV-cache bytes one token costs in this variant (kept attention layers only).',
      (v) => v.kvBytesPerToken,
    );
    gauge(
      'kv_cache_used_bytes',
      "KV-cache bytes of the blocks this variant's live tokens occupy.",
      (v) => v.kvCacheBytesUsed,
    );
    gauge(
      'kv_cache_allocated_bytes',
      'KV-cache bytes of the buffers this variant holds (≥ used: rows padded to the longest in whole blocks, spare rows).',
      (v) => v.kvCacheBytesAllocated,
    );
    // A counter kept by the engine: each scrape exports its cumulative value as it is.
    new Counter({
      name: `${PREFIX}num_preemptions_total`,
      help: 'Cumulative number of preemptions: sequences whose KV was freed to be recomputed when memory frees up.',
      labelNames: ['variant'],
      registers,
      collect(this: Counter<'variant'>) {
        this.reset();
        for (const v of engine()?.variants() ?? []) this.inc({ variant: v.id }, v.numPreemptions);
      },
    });
    new Counter({
      name: `${PREFIX}decode_steps_total`,
      help: 'Decode steps (batched model runs that sample one token per running sequence) per variant.',
      labelNames: ['variant'],
      registers,
      collect(this: Counter<'variant'>) {
        this.reset();
        for (const v of engine()?.variants() ?? [])
          this.inc({ variant: v.id }, v.deviceTransfer?.decodeSteps ?? 0);
      },
    });
    // "No KV traffic" measured: with the KV cache on the device, bytes per decode step stay flat as
    // contexts grow (ids, positions, sampled logits); with host KV the whole past goes up each step.
    new Counter({
      name: `${PREFIX}device_transfer_bytes_total`,
      help: 'Bytes decode steps moved between host memory and the device (model runs and KV updates; 0 on the CPU EP).',
      labelNames: ['variant', 'direction'],
      registers,
      collect(this: Counter<'variant' | 'direction'>) {
        this.reset();
        for (const v of engine()?.variants() ?? []) {
          this.inc({ variant: v.id, direction: 'host_to_device' }, v.deviceTransfer?.hostToDeviceBytes ?? 0);
          this.inc({ variant: v.id, direction: 'device_to_host' }, v.deviceTransfer?.deviceToHostBytes ?? 0);
        }
      },
    });
    // The label is the variant name, never the mask: the number of distinct masks is the value.
    new Gauge({
      name: `${PREFIX}adaptive_distinct_masks`,
      help: 'Input-adaptive variants only: distinct drop sets their prompts have chosen since start (each decodes as its own batch).',
      labelNames: ['variant'],
      registers,
      collect(this: Gauge<'variant'>) {
        this.reset();
        for (const v of engine()?.variants() ?? []) {
          if (v.adaptive) this.set({ variant: v.id }, v.adaptive.distinctMasks);
        }
      },
    });
  }
}
