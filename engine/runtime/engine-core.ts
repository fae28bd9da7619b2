import { HostKvCachePool } from '../../kv-cache/host-pool.ts';
import { kvShapeBytes } from '../../kv-cache/kv-layout.ts';
import type { KvArena, KvCachePool } from '../../kv-cache/kv-pool.ts';
import type { GenerateRequest, ScoreRequest, ScoreResult, VariantInfo } from '../client.ts';
import { DropserveError } from '../errors.ts';
import type { SublayerMask } from '../graph/io.ts';
import type { KvDtype } from '../graph/kv-dtype.ts';
import type { ModelConfig } from '../model/config.ts';
import { chooseAdaptiveDrops, dropKey, sublayerInfluence } from '../plan/adaptive-mask.ts';
import { type DropSpec, maskOf } from '../plan/plan.ts';
import type { WeightByteTable } from '../quant/weight-bytes.ts';
import { weightBytesPerToken } from '../quant/weight-bytes.ts';
import { validateGenerateRequest } from '../request/validate-generate.ts';
import { createSamplerState } from '../sampling/sampler.ts';
import { Executor } from './executor.ts';
import type { ForwardRunner } from './forward-runner.ts';
import {
  type EventSink,
  emptyScoreResult,
  type GenerationJob,
  type Job,
  type MaskGroup,
  type ScoreJob,
  tokensToRecompute,
  type VariantState,
} from './jobs.ts';
import { findSharedPrefix } from './prefix-reuse.ts';
import {
  type AdmissionPolicy,
  decodeBatches,
  planRound,
  type RoundPlan,
  type RunningJob,
  type SchedulerConfig,
  type SchedulerState,
  type WaitingJob,
} from './scheduler.ts';
import { acceptToken, collectScores, finishEvent, nowMs, type StopDecision } from './updater.ts';
import { resolveVariant, type VariantDefinition } from './variant.ts';

export type { EventSink } from './jobs.ts';

export interface EngineCoreOptions {
  config: ModelConfig;
  runner: ForwardRunner;
  variants: VariantDefinition[];
  /** Budget for all variants' KV caches together (used when no pool is given). */
  kvCacheBytes: number;
  /** Where KV lives; a host pool of kvCacheBytes in blocks of kvBlockTokens when absent. */
  kvPool?: KvCachePool;
  /** Tokens per KV block (default 16). */
  kvBlockTokens?: number;
  /** on-demand (default): admit on blocks in use; worst-case: reserve prompt + max_tokens. */
  kvAdmission?: AdmissionPolicy;
  /** Share of the budget kept free when admitting (default 0.01). */
  kvWatermark?: number;
  /** Element type of the stored K/V: fp16 halves bytes per token (device pools only). */
  kvDtype?: KvDtype;
  /** Requests waiting for their prefill beyond this are rejected with DS_OVERLOADED. */
  maxQueue: number;
  /** Prompt tokens prefilled per scheduling round (at least one sequence), bounding decode stalls. */
  maxPrefillTokensPerRound?: number;
  /** Reuse the KV of a running sequence's prompt prefix (off when absent). */
  prefixReuse?: PrefixReuseOptions;
  /** Weight bytes each sublayer reads per token (engine/quant/weight-bytes.ts); reported per variant. */
  weightBytes?: WeightByteTable;
}

/**
 * Prefix reuse: a new sequence whose prompt starts with at least minPrefixTokens tokens of the prompt
 * of a sequence running in the same variant (same drop mask, so the same KV) copies those positions'
 * K/V from the donor's row and prefills only the rest of its prompt.
 */
export interface PrefixReuseOptions {
  minPrefixTokens: number;
}

export const DEFAULT_MIN_PREFIX_TOKENS = 16;
export const DEFAULT_KV_WATERMARK = 0.01;

/** Most of the engine's time background jobs (shadow scoring) may take while interactive work runs. */
const BACKGROUND_SHARE = 0.1;
/** Tokens a background score feeds per model run. */
const SCORE_CHUNK_TOKENS = 32;

/**
 * What a variant's decode steps drop: its spec, or for an adaptive variant K attention and M MLP
 * sublayers — every layer of a Llama-family model is the same size, so which ones does not matter.
 */
function decodedSpec(v: VariantState): DropSpec {
  if (!v.adaptive) return v.def.spec;
  const first = (n: number): number[] => Array.from({ length: n }, (_, i) => i);
  return { dropAttention: first(v.adaptive.attention), dropMlp: first(v.adaptive.mlp) };
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const scoreArenaId = (variant: string): string => `${variant}#score`;

/**
 * The serving runtime of one model, one step at a time in the way vLLM v1 reads: each round the
 * scheduler (scheduler.ts, pure) plans admissions, preemptions, one decode step per variant and
 * score chunks from the engine's state; the executor (executor.ts) runs that plan on the model and
 * the KV pool; the updater (updater.ts) samples, applies stops and finishes. This class owns the
 * state in between — the queue, the running jobs, the variants — and the loop that ties them.
 *
 * KV is taken on demand: a sequence's row grows as it does, so admission needs only its prompt; when
 * memory runs out the most recently admitted job of lowest priority is preempted and recomputed
 * later from its prompt and the tokens it already produced, so its output is unchanged.
 */
export class EngineCore {
  readonly config: ModelConfig;
  readonly #executor: Executor;
  readonly #pool: KvCachePool;
  readonly #variants = new Map<string, VariantState>();
  readonly #schedulerConfig: SchedulerConfig;
  readonly #maxQueue: number;
  readonly #prefixReuse: PrefixReuseOptions | null;
  readonly #weightBytes: WeightByteTable | null;
  readonly #admission: AdmissionPolicy;
  /** Not yet admitted, interactive first then background, FIFO within each (preempted at the front). */
  #waiting: Job[] = [];
  readonly #running = new Map<string, Job>();
  readonly #byRequestId = new Map<string, GenerationJob>();
  #admissions = 0;
  #scoreIds = 0;
  #wake: (() => void) | null = null;
  #isClosed = false;
  /** performance.now() before which no background job may run while interactive work runs. */
  #backgroundNotBefore = 0;
  #isRunningLoop = false;
  #loopDone: Promise<void> = Promise.resolve();
  /**
   * Called after every model run and when the loop goes idle: the worker flushes the events and
   * counters gathered since the last call, so a token leaves the worker as soon as it is sampled.
   */
  onStepEnd: (() => void) | null = null;

  constructor(options: EngineCoreOptions) {
    this.config = options.config;
    if (!Number.isInteger(options.maxQueue) || options.maxQueue < 0) {
      throw new RangeError(`maxQueue must be a non-negative integer, got ${options.maxQueue}`);
    }
    this.#maxQueue = options.maxQueue;
    this.#prefixReuse = options.prefixReuse ?? null;
    this.#weightBytes = options.weightBytes ?? null;
    const minPrefix = this.#prefixReuse?.minPrefixTokens;
    if (minPrefix !== undefined && !(Number.isInteger(minPrefix) && minPrefix >= 1)) {
      throw new RangeError(`prefixReuse.minPrefixTokens must be a positive integer, got ${minPrefix}`);
    }
    const watermark = options.kvWatermark ?? DEFAULT_KV_WATERMARK;
    if (!(watermark >= 0 && watermark < 0.5)) {
      throw new RangeError(`kvWatermark must be in [0, 0.5), got ${watermark}`);
    }
    this.#pool =
      options.kvPool ??
      new HostKvCachePool({ budgetBytes: options.kvCacheBytes, blockTokens: options.kvBlockTokens });
    this.#executor = new Executor(options.runner, this.#pool.placement, () => this.#pool.transfers);
    this.#admission = options.kvAdmission ?? 'on-demand';
    this.#schedulerConfig = {
      budgetBytes: this.#pool.budgetBytes,
      blockTokens: this.#pool.blockTokens,
      watermarkBytes: Math.floor(watermark * this.#pool.budgetBytes),
      admission: this.#admission,
      maxPrefillTokensPerRound: options.maxPrefillTokensPerRound ?? 512,
    };
    for (const definition of options.variants) {
      if (this.#variants.has(definition.id)) {
        throw new DropserveError('DS_INVALID_ARGUMENT', `variant "${definition.id}" is defined twice`);
      }
      const def = resolveVariant(definition, options.config, options.kvDtype);
      this.#variants.set(def.id, {
        def,
        decodeArena: this.#pool.addArena(def.id, def.kvLayout),
        scoreArena: this.#pool.addArena(scoreArenaId(def.id), def.kvLayout),
        waiting: 0,
        running: 0,
        prefixReusedTokens: 0,
        preemptions: 0,
        adaptive: def.adaptive ?? null,
        maskGroups: new Map(),
        decodeTransfer: { decodeSteps: 0, hostToDeviceBytes: 0, deviceToHostBytes: 0 },
      });
    }
  }

  get kvCacheBytes(): number {
    return this.#pool.budgetBytes;
  }

  /** KV memory now, all variants: what the budget allows, what buffers hold, what live tokens use. */
  kvMemory(): { budgetBytes: number; allocatedBytes: number; usedBytes: number } {
    return {
      budgetBytes: this.#pool.budgetBytes,
      allocatedBytes: this.#pool.allocatedBytes,
      usedBytes: this.#pool.usedBytes,
    };
  }

  /** Prompt tokens reused from donors, all variants (0 when prefix reuse is off). */
  get prefixReusedTokens(): number {
    let total = 0;
    for (const v of this.#variants.values()) total += v.prefixReusedTokens;
    return total;
  }

  variantIds(): string[] {
    return [...this.#variants.keys()];
  }

  variants(): VariantInfo[] {
    const base = [...this.#variants.keys()][0] ?? '';
    const budget = this.#pool.budgetBytes;
    return [...this.#variants.values()].map((v) => {
      const decode = this.#pool.stats(v.def.id);
      const arenas = [decode, this.#pool.stats(scoreArenaId(v.def.id))];
      for (const group of v.maskGroups.values()) arenas.push(this.#pool.stats(group.arena.id));
      const usedBytes = arenas.reduce((sum, a) => sum + a.usedBytes, 0);
      return {
        id: v.def.id,
        base,
        spec: v.def.spec,
        kvBytesPerToken: decode.bytesPerToken,
        ...(this.#weightBytes
          ? {
              weightBytesPerToken: weightBytesPerToken(this.#weightBytes, decodedSpec(v)),
              weightFormat: this.#weightBytes.format,
            }
          : {}),
        kvCacheUsagePerc: usedBytes / budget,
        kvCacheBytesUsed: usedBytes,
        kvCacheBytesAllocated: arenas.reduce((sum, a) => sum + a.allocatedBytes, 0),
        kvCacheBudgetBytes: budget,
        kvBlockTokens: this.#pool.blockTokens,
        kvCachePlacement: this.#pool.placement,
        kvAdmission: this.#admission,
        numPreemptions: v.preemptions,
        requestsRunning: v.running,
        requestsWaiting: v.waiting,
        ...(this.#prefixReuse ? { prefixReusedTokens: v.prefixReusedTokens } : {}),
        ...(v.adaptive ? { adaptive: { ...v.adaptive, distinctMasks: v.maskGroups.size } } : {}),
        deviceTransfer: { ...v.decodeTransfer },
      };
    });
  }

  /**
   * Queues a generation. Throws (synchronously) a DropserveError for invalid requests, unknown
   * variants, context overflow and a full queue; afterwards every outcome arrives through the sink.
   */
  submit(request: GenerateRequest, sink: EventSink): void {
    if (this.#isClosed) throw new DropserveError('DS_SHUTTING_DOWN', 'the server is shutting down');
    const variant = this.#variantOf(request.variant);
    if (this.#byRequestId.has(request.requestId)) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `request id ${request.requestId} is already in use`);
    }
    validateGenerateRequest(request, this.config);
    const worstCaseTokens = request.promptTokenIds.length + request.maxTokens;
    if (this.#waiting.length >= this.#maxQueue) {
      throw new DropserveError(
        'DS_OVERLOADED',
        `server overloaded: ${this.#waiting.length} requests already waiting (--max-queue ${this.#maxQueue})`,
        { retryAfterSeconds: 1 },
      );
    }
    this.#checkFitsAlone(variant, worstCaseTokens, 'request');
    const eos = request.ignoreEos ? [] : this.config.eosTokenIds;
    const job: GenerationJob = {
      kind: 'generate',
      id: request.requestId,
      variant,
      priority: request.priority ?? 'interactive',
      state: 'waiting',
      admittedAt: 0,
      isAborted: false,
      request,
      sink,
      sampler: createSamplerState(request.sampling, request.promptTokenIds),
      stopIds: new Set([...eos, ...(request.stopTokenIds ?? [])]),
      worstCaseTokens,
      output: [],
      timings: { arrivalMs: nowMs(), finishedMs: 0 },
      preemptions: 0,
      maskGroup: null,
    };
    this.#byRequestId.set(job.id, job);
    this.#enqueue(job, 'back');
    this.#ensureLoop();
  }

  /** Cancels a generation wherever it is; its KV is freed before the next model run. */
  abort(requestId: string): void {
    const job = this.#byRequestId.get(requestId);
    if (!job) return;
    job.isAborted = true;
    if (job.state === 'waiting') this.#finishGeneration(job, 'abort');
    this.#wakeLoop();
  }

  /**
   * Teacher-forced log-probabilities of a token sequence. A job of the same scheduler: its KV sits in
   * the variant's score arena inside the one budget, fed in chunks, and it can be preempted (and
   * restarted) like any other job. Background scores only take the engine's spare time.
   */
  score(request: ScoreRequest): Promise<ScoreResult> {
    if (this.#isClosed) return Promise.reject(new DropserveError('DS_SHUTTING_DOWN', 'shutting down'));
    let variant: VariantState;
    try {
      variant = this.#variantOf(request.variant);
      if (variant.adaptive) {
        throw new DropserveError(
          'DS_UNSUPPORTED',
          `${variant.def.id} is input-adaptive: what it drops depends on each prompt, so it has no fixed network to score a text with`,
        );
      }
      const n = request.tokenIds.length;
      if (n < 2 || request.fromIndex < 1 || request.fromIndex >= n || n > this.config.maxSeqLen) {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `score needs 2..${this.config.maxSeqLen} tokens and 1 ≤ fromIndex < length; got ${n} tokens, fromIndex ${request.fromIndex}`,
        );
      }
      this.#checkFitsAlone(variant, n - 1, 'score');
    } catch (error) {
      return Promise.reject(error);
    }
    const priority = request.priority ?? 'interactive';
    return new Promise((resolve, reject) => {
      const job: ScoreJob = {
        kind: 'score',
        id: `score#${++this.#scoreIds}`,
        variant,
        priority,
        state: 'waiting',
        admittedAt: 0,
        isAborted: false,
        request,
        resolve,
        reject,
        nextToken: 0,
        // An interactive score is one pass; a background one yields to interactive work every chunk.
        chunkTokens: priority === 'background' ? SCORE_CHUNK_TOKENS : request.tokenIds.length - 1,
        result: emptyScoreResult(request),
      };
      this.#enqueue(job, 'back');
      this.#ensureLoop();
    });
  }

  /** Stops admitting; gives running sequences graceMs to finish, then aborts the rest. */
  async close(graceMs = 0): Promise<void> {
    this.#isClosed = true;
    for (const job of [...this.#waiting]) {
      if (job.kind === 'generate') this.abort(job.id);
    }
    const deadline = Date.now() + graceMs;
    while (this.#byRequestId.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const id of [...this.#byRequestId.keys()]) this.abort(id);
    const shuttingDown = new DropserveError('DS_SHUTTING_DOWN', 'shutting down');
    for (const job of [...this.#waiting, ...this.#running.values()]) {
      if (job.kind === 'score') this.#finishScore(job, shuttingDown);
    }
    this.#wakeLoop();
    await this.#loopDone;
    await this.#executor.release();
    await this.#pool.release?.();
  }

  #variantOf(id: string): VariantState {
    const variant = this.#variants.get(id);
    if (!variant) {
      throw new DropserveError(
        'DS_NOT_FOUND',
        `The model \`${id}\` does not exist. Available: ${[...this.#variants.keys()].join(', ')}`,
        { param: 'model' },
      );
    }
    return variant;
  }

  /** A job that could not run even with the whole budget to itself is refused up front. */
  #checkFitsAlone(variant: VariantState, tokens: number, what: string): void {
    const bytesPerToken = variant.decodeArena.bytesPerToken;
    const needed = kvShapeBytes(bytesPerToken, 1, tokens, this.#pool.blockTokens);
    if (needed > this.#pool.budgetBytes) {
      throw new DropserveError(
        'DS_KV_EXHAUSTED',
        `${what} needs ${needed} bytes of KV cache (${tokens} tokens in ${this.#pool.blockTokens}-token blocks × ${bytesPerToken} B) but the whole KV budget is ${this.#pool.budgetBytes} bytes`,
      );
    }
  }

  /** Interactive jobs go before every background one; 'front' puts a preempted job first in its class. */
  #enqueue(job: Job, where: 'front' | 'back'): void {
    job.state = 'waiting';
    if (job.kind === 'generate') job.variant.waiting++;
    const firstBackground = this.#waiting.findIndex((j) => j.priority === 'background');
    const endOfInteractive = firstBackground < 0 ? this.#waiting.length : firstBackground;
    const index =
      job.priority === 'background'
        ? where === 'front'
          ? endOfInteractive
          : this.#waiting.length
        : where === 'front'
          ? 0
          : endOfInteractive;
    this.#waiting.splice(index, 0, job);
  }

  #ensureLoop(): void {
    if (this.#isRunningLoop) {
      this.#wakeLoop();
      return;
    }
    this.#isRunningLoop = true;
    this.#loopDone = this.#loop().finally(() => {
      this.#isRunningLoop = false;
    });
  }

  #wakeLoop(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async #loop(): Promise<void> {
    while (true) {
      this.#reapAborted();
      if (this.#waiting.length === 0 && this.#running.size === 0) {
        if (this.#isClosed) return;
        this.onStepEnd?.();
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
        continue;
      }
      let hadWork = true;
      try {
        hadWork = await this.#runRound();
      } catch (error) {
        this.#failEverything(error);
      }
      this.onStepEnd?.();
      if (!hadWork) {
        // Only background work waits for its time share: sleep until it is due (or new work wakes us).
        const delay = Math.max(1, this.#backgroundNotBefore - performance.now());
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        continue;
      }
      // Lets aborts, new requests and worker messages in between model runs.
      await yieldToEventLoop();
    }
  }

  #schedulerState(): SchedulerState {
    const groups = [...this.#variants.values()].flatMap((v) => [
      { id: v.def.id, bytesPerToken: v.decodeArena.bytesPerToken },
      { id: scoreArenaId(v.def.id), bytesPerToken: v.scoreArena.bytesPerToken },
    ]);
    const running: RunningJob[] = [...this.#running.values()].map((job) => ({
      id: job.id,
      kind: job.kind,
      group: this.#groupOf(job),
      priority: job.priority,
      admittedAt: job.admittedAt,
      cachedTokens:
        job.kind === 'generate' ? job.request.promptTokenIds.length + job.output.length - 1 : job.nextToken,
      stepTokens: job.kind === 'generate' ? 1 : this.#scoreChunkLength(job),
      worstCaseTokens: this.#worstCase(job),
    }));
    const waiting: WaitingJob[] = this.#waiting.map((job) => {
      const admitTokens =
        job.kind === 'generate'
          ? job.request.promptTokenIds.length + Math.max(job.output.length, 1)
          : this.#scoreChunkLength(job);
      return {
        id: job.id,
        kind: job.kind,
        group: this.#groupOf(job),
        priority: job.priority,
        admitTokens,
        computeTokens: job.kind === 'generate' ? admitTokens - 1 : admitTokens,
        worstCaseTokens: this.#worstCase(job),
      };
    });
    return { groups, running, waiting, backgroundAllowed: this.#isBackgroundAllowed() };
  }

  /**
   * The scheduler's batch group. An adaptive variant's sequences plan as one group whatever drops
   * they chose: rows × the longest row over all of them bounds what their per-drop arenas take.
   */
  #groupOf(job: Job): string {
    return job.kind === 'generate' ? job.variant.def.id : scoreArenaId(job.variant.def.id);
  }

  /** Where the job's KV row lives (null before an adaptive sequence's first prefill has chosen). */
  #arenaOf(job: Job): KvArena | null {
    if (job.kind === 'score') return job.variant.scoreArena;
    if (job.variant.adaptive) return job.maskGroup?.arena ?? null;
    return job.variant.decodeArena;
  }

  #removeRow(job: Job): void {
    const arena = this.#arenaOf(job);
    if (arena?.hasRow(job.id)) arena.removeRow(job.id);
  }

  #worstCase(job: Job): number {
    return job.kind === 'generate' ? job.worstCaseTokens : job.request.tokenIds.length - 1;
  }

  #scoreChunkLength(job: ScoreJob): number {
    return Math.min(job.chunkTokens, job.request.tokenIds.length - 1 - job.nextToken);
  }

  /** Background work runs only when no interactive job waits, and within its time share. */
  #isBackgroundAllowed(): boolean {
    if (this.#waiting.some((j) => j.priority === 'interactive')) return false;
    for (const job of this.#running.values()) {
      if (job.priority === 'interactive') return performance.now() >= this.#backgroundNotBefore;
    }
    return true;
  }

  /** One scheduler round; false when nothing could run (only background work, not due yet). */
  async #runRound(): Promise<boolean> {
    const plan = this.#steadyDecodePlan() ?? planRound(this.#schedulerState(), this.#schedulerConfig);
    for (const id of plan.preempt) this.#preempt(this.#running.get(id)!);
    let ran = false;
    for (const id of plan.admit) {
      const job = this.#waiting.find((j) => j.id === id);
      if (!job || job.isAborted) continue;
      await this.#timeBackground(job, () => this.#admit(job));
      ran = true;
      this.onStepEnd?.();
      await yieldToEventLoop();
      this.#reapAborted();
    }
    for (const { group, jobs } of plan.decode) {
      this.#reapAborted();
      const batch = jobs.flatMap((id) => {
        const job = this.#running.get(id);
        return job?.kind === 'generate' && !job.isAborted ? [job] : [];
      });
      if (batch.length === 0) continue;
      await this.#decode(this.#variants.get(group)!, batch);
      ran = true;
      this.onStepEnd?.();
    }
    for (const id of plan.scoreChunks) {
      const job = this.#running.get(id);
      if (job?.kind !== 'score') continue;
      await this.#timeBackground(job, () => this.#advanceScore(job));
      ran = true;
      this.onStepEnd?.();
    }
    return ran || plan.preempt.length > 0;
  }

  /**
   * The scheduler's plan when there is nothing to decide: nobody waits, only generations run, and
   * every arena already has room for one more token per row (so the plan fits what is allocated,
   * which fits the budget). Then every variant decodes all its sequences; null otherwise. Saves
   * building the scheduler's state on most decode steps, which a tiny model's step can feel.
   */
  #steadyDecodePlan(): RoundPlan | null {
    if (this.#waiting.length > 0) return null;
    const decoding: { id: string; group: string }[] = [];
    for (const job of this.#running.values()) {
      if (job.kind !== 'generate') return null;
      const arena = this.#arenaOf(job);
      if (!arena || arena.length(arena.rowOf(job.id)) + 1 > arena.tokenCapacity) return null;
      decoding.push({ id: job.id, group: this.#groupOf(job) });
    }
    const decode = decodeBatches([...this.#variants.keys()], decoding);
    return { preempt: [], admit: [], decode, scoreChunks: [] };
  }

  /**
   * Runs a step of a job; a background one is timed so that, while interactive work runs, the next
   * background step waits long enough for background work to stay within BACKGROUND_SHARE.
   */
  async #timeBackground(job: Job, step: () => Promise<void>): Promise<void> {
    const started = performance.now();
    await step();
    if (job.priority !== 'background') return;
    const ms = performance.now() - started;
    this.#backgroundNotBefore = performance.now() + (ms * (1 - BACKGROUND_SHARE)) / BACKGROUND_SHARE;
  }

  #preempt(job: Job): void {
    this.#running.delete(job.id);
    this.#removeRow(job);
    job.variant.preemptions++;
    if (job.kind === 'generate') {
      job.variant.running--;
      job.preemptions++;
    } else {
      job.nextToken = 0;
      job.result = emptyScoreResult(job.request);
    }
    this.#enqueue(job, 'front');
  }

  /** Takes a job off the queue, gives it a KV row and runs its prefill (or its first score chunk). */
  async #admit(job: Job): Promise<void> {
    this.#waiting.splice(this.#waiting.indexOf(job), 1);
    job.state = 'running';
    job.admittedAt = ++this.#admissions;
    this.#running.set(job.id, job);
    // An adaptive sequence gets its row in its drop set's arena as its prefill writes it.
    if (!(job.kind === 'generate' && job.variant.adaptive)) this.#arenaOf(job)!.addRow(job.id);
    if (job.kind === 'score') {
      await this.#advanceScore(job);
      return;
    }
    job.variant.waiting--;
    job.variant.running++;
    job.timings.scheduledMs ??= nowMs();
    try {
      await this.#prefill(job);
    } catch (error) {
      this.#finishGeneration(job, 'error', undefined, error);
    }
  }

  /**
   * Builds a generation's KV row: its prompt on first admission, prompt plus all output but the last
   * token after a preemption (that token is fed by the next decode, as it would have been). A shared
   * prompt prefix of a running sequence is copied instead of computed.
   */
  async #prefill(job: GenerationJob): Promise<void> {
    const { variant } = job;
    if (variant.adaptive) {
      await this.#prefillAdaptive(job);
      return;
    }
    const tokens = tokensToRecompute(job);
    const reused = await this.#reusePrefix(job, tokens);
    const logits = await this.#executor.extend(
      variant.decodeArena,
      variant.def.mask,
      job.id,
      tokens.slice(reused),
      [tokens.length - reused - 1],
    );
    if (job.output.length > 0) return; // recomputed: its next token is already known
    job.timings.prefillEndMs = nowMs();
    if (!job.isAborted) this.#settle(job, acceptToken(job, logits, this.config.maxSeqLen));
  }

  /**
   * An adaptive variant's prefill: the prompt runs through the full model, whose hidden states give
   * each sublayer's influence on this prompt; the least influential are dropped for the rest of the
   * sequence, and only the kept attention layers' KV is stored. After a preemption the prompt is
   * recomputed the same way and the output so far under the drops chosen the first time.
   */
  async #prefillAdaptive(job: GenerationJob): Promise<void> {
    const { variant } = job;
    const prompt = job.request.promptTokenIds;
    const isFirst = job.maskGroup === null;
    const output = await this.#executor.runDetached(variant.def.mask, prompt, [prompt.length - 1], isFirst);
    if (isFirst) {
      const influence = sublayerInfluence(
        output.hiddenStates!,
        0,
        prompt.length,
        this.config.dim,
        this.config.numLayers,
      );
      job.maskGroup = this.#maskGroup(variant, chooseAdaptiveDrops(influence, variant.adaptive!));
    }
    const group = job.maskGroup!;
    group.arena.addRow(job.id);
    await this.#executor.writeRow(group.arena, job.id, output, prompt.length);
    if (job.output.length > 1) {
      await this.#executor.extend(group.arena, group.mask, job.id, job.output.slice(0, -1), [0]);
    }
    if (!isFirst) return;
    job.timings.prefillEndMs = nowMs();
    if (!job.isAborted) this.#settle(job, acceptToken(job, output.logits, this.config.maxSeqLen));
  }

  #maskGroup(variant: VariantState, drops: DropSpec): MaskGroup {
    const key = dropKey(drops);
    let group = variant.maskGroups.get(key);
    if (!group) {
      const mask = maskOf(drops, this.config.numLayers);
      group = {
        drops,
        mask,
        arena: this.#pool.addArena(`${variant.def.id}#${key}`, {
          ...variant.def.kvLayout,
          keptLayers: mask.attnKeep.flatMap((keep, layer) => (keep ? [layer] : [])),
        }),
      };
      variant.maskGroups.set(key, group);
    }
    return group;
  }

  /**
   * Copies the longest prompt prefix shared with a running sequence of the same variant; returns its
   * length (0 = none). At most n−1 tokens, so the last position is computed: its logits are needed.
   */
  async #reusePrefix(job: GenerationJob, tokens: number[]): Promise<number> {
    if (!this.#prefixReuse || job.variant.adaptive) return 0;
    const arena = job.variant.decodeArena;
    const donors = [...this.#running.values()].flatMap((d) =>
      d.kind === 'generate' && d.variant === job.variant && d !== job
        ? [{ id: d.id, tokens: d.request.promptTokenIds, cached: arena.length(arena.rowOf(d.id)) }]
        : [],
    );
    const shared = findSharedPrefix(tokens, donors);
    if (!shared || shared.tokens < this.#prefixReuse.minPrefixTokens) return 0;
    await this.#executor.copyPrefix(arena, shared.donorId, job.id, shared.tokens);
    job.variant.prefixReusedTokens += shared.tokens;
    return shared.tokens;
  }

  async #decode(variant: VariantState, batch: GenerationJob[]): Promise<void> {
    if (variant.adaptive) {
      // One batch per drop set: a run has one mask.
      const byGroup = new Map<MaskGroup, GenerationJob[]>();
      for (const job of batch) byGroup.set(job.maskGroup!, [...(byGroup.get(job.maskGroup!) ?? []), job]);
      for (const [group, jobs] of byGroup) {
        await this.#decodeBatch(group.arena, group.mask, jobs);
        this.onStepEnd?.();
      }
      return;
    }
    await this.#decodeBatch(variant.decodeArena, variant.def.mask, batch);
  }

  async #decodeBatch(arena: KvArena, mask: SublayerMask, batch: GenerationJob[]): Promise<void> {
    let logits: Float32Array;
    try {
      logits = await this.#executor.decode(
        arena,
        mask,
        batch.map((j) => j.id),
        batch.map((j) => j.output.at(-1)!),
      );
    } catch (error) {
      for (const job of batch) this.#finishGeneration(job, 'error', undefined, error);
      return;
    }
    const counted = batch[0]!.variant.decodeTransfer;
    counted.decodeSteps++;
    counted.hostToDeviceBytes += this.#executor.lastDecodeTransfer.hostToDeviceBytes;
    counted.deviceToHostBytes += this.#executor.lastDecodeTransfer.deviceToHostBytes;
    const vocab = this.config.vocabSize;
    batch.forEach((job, b) => {
      if (!job.isAborted) {
        this.#settle(
          job,
          acceptToken(job, logits.subarray(b * vocab, (b + 1) * vocab), this.config.maxSeqLen),
        );
      }
    });
  }

  #settle(job: GenerationJob, decision: StopDecision): void {
    if (decision?.reason === 'stop') this.#finishGeneration(job, 'stop', decision.stopTokenId);
    else if (decision?.reason === 'length') this.#finishGeneration(job, 'length');
  }

  /** Feeds a score job's next chunk and collects the scored rows; resolves it after the last. */
  async #advanceScore(job: ScoreJob): Promise<void> {
    const { request, variant } = job;
    const tokens = request.tokenIds;
    const start = job.nextToken;
    const length = this.#scoreChunkLength(job);
    const firstScored = Math.max(start, request.fromIndex - 1);
    const scored = Array.from(
      { length: Math.max(0, start + length - firstScored) },
      (_, i) => firstScored + i,
    );
    try {
      const logits = await this.#executor.extend(
        variant.scoreArena,
        variant.def.mask,
        job.id,
        tokens.slice(start, start + length),
        scored.map((p) => p - start),
      );
      collectScores(job.result, request, logits, scored, this.config.vocabSize);
      job.nextToken = start + length;
      if (job.nextToken >= tokens.length - 1) this.#finishScore(job);
    } catch (error) {
      this.#finishScore(job, error);
    }
  }

  /** A bug of ours between model runs: every job ends with that error rather than the loop dying. */
  #failEverything(error: unknown): void {
    for (const job of [...this.#running.values(), ...this.#waiting]) {
      if (job.kind === 'generate') this.#finishGeneration(job, 'error', undefined, error);
      else this.#finishScore(job, error);
    }
  }

  #reapAborted(): void {
    for (const job of [...this.#running.values()]) {
      if (job.kind === 'generate' && job.isAborted) this.#finishGeneration(job, 'abort');
    }
  }

  #release(job: Job): void {
    if (job.state === 'running') {
      this.#running.delete(job.id);
      this.#removeRow(job);
      if (job.kind === 'generate') job.variant.running--;
    } else if (job.state === 'waiting') {
      this.#waiting.splice(this.#waiting.indexOf(job), 1);
      if (job.kind === 'generate') job.variant.waiting--;
    }
    job.state = 'finished';
  }

  #finishGeneration(
    job: GenerationJob,
    reason: 'stop' | 'length' | 'abort' | 'error',
    stopTokenId?: number,
    error?: unknown,
  ): void {
    if (job.state === 'finished') return;
    this.#release(job);
    this.#byRequestId.delete(job.id);
    job.sink(finishEvent(job, reason, stopTokenId, error));
  }

  /** Resolves a score with its result, or rejects it with `error`. */
  #finishScore(job: ScoreJob, error?: unknown): void {
    if (job.state === 'finished') return;
    this.#release(job);
    if (error === undefined) job.resolve(job.result);
    else job.reject(error);
  }
}
