import { createHostKvArena, HostKvCachePool } from '../../kv-cache/host-pool.ts';
import type { KvArena, KvCachePool, KvReservation } from '../../kv-cache/kv-pool.ts';
import type {
  FinishReason,
  GenerateEvent,
  GenerateRequest,
  RequestTimings,
  ScoreRequest,
  ScoreResult,
  VariantInfo,
} from '../client.ts';
import { DropserveError } from '../errors.ts';
import type { ForwardInput } from '../graph/io.ts';
import type { ModelConfig } from '../model/config.ts';
import type { WeightByteTable } from '../quant/weight-bytes.ts';
import { weightBytesPerToken } from '../quant/weight-bytes.ts';
import { argmax, logSoftmax } from '../sampling/log-softmax.ts';
import { createSamplerState, type SamplerState, sampleToken } from '../sampling/sampler.ts';
import type { ForwardRunner } from './forward-runner.ts';
import { type ResolvedVariant, resolveVariant, type VariantDefinition } from './variant.ts';

export interface EngineCoreOptions {
  config: ModelConfig;
  runner: ForwardRunner;
  variants: VariantDefinition[];
  /** Budget for all variants' KV caches together. */
  kvCacheBytes: number;
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

export type EventSink = (event: GenerateEvent) => void;

interface Sequence {
  id: string;
  request: GenerateRequest;
  variant: VariantState;
  sink: EventSink;
  sampler: SamplerState;
  stopIds: Set<number>;
  /** Prompt + max_tokens, capped at the context: the KV rows this sequence may need. */
  worstCaseTokens: number;
  reservation?: KvReservation;
  outputCount: number;
  lastToken: number;
  isAborted: boolean;
  timings: RequestTimings;
}

interface VariantState {
  def: ResolvedVariant;
  arena: KvArena;
  /** Sequences admitted, prefilled and decoding, by id. */
  running: Map<string, Sequence>;
  waiting: number;
  /** Prompt tokens whose KV was copied from a donor instead of computed. */
  prefixReusedTokens: number;
}

/** A background score in progress (see #advanceBackgroundScore). */
interface ScoreJob {
  pending: PendingScore;
  arena: KvArena;
  /** Next token position to feed. */
  nextToken: number;
  result: ScoreResult;
}

interface PendingScore {
  request: ScoreRequest;
  variant: VariantState;
  resolve: (r: ScoreResult) => void;
  reject: (e: unknown) => void;
}

/** Most of the engine's time background scores (shadow scoring) may take from interactive work. */
const BACKGROUND_SHARE = 0.1;
/** Tokens a background score feeds per model run. */
const SCORE_CHUNK_TOKENS = 32;

const nowMs = (): number => performance.timeOrigin + performance.now();
const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * The serving runtime of one model: admission, continuous batching and sampling. One loop owns
 * the model session; each round it (1) drops aborted sequences, (2) prefills waiting sequences up
 * to a token budget, (3) runs one decode step per variant with running sequences — all sequences
 * of a variant in one session.run, variants in turn — and (4) runs a background score when nothing
 * interactive waits. Events go out through per-sequence sinks; callers wrap them as they need
 * (async iterables in-process, batched messages across a worker thread).
 */
export class EngineCore {
  readonly config: ModelConfig;
  readonly #runner: ForwardRunner;
  readonly #pool: KvCachePool;
  readonly #variants = new Map<string, VariantState>();
  readonly #maxQueue: number;
  readonly #maxPrefillTokensPerRound: number;
  readonly #prefixReuse: PrefixReuseOptions | null;
  readonly #weightBytes: WeightByteTable | null;
  /** Not yet prefilled, interactive first then background, FIFO within each. */
  #waiting: Sequence[] = [];
  #scores: PendingScore[] = [];
  #scoreJob: ScoreJob | null = null;
  readonly #byId = new Map<string, Sequence>();
  #wake: (() => void) | null = null;
  #isClosed = false;
  /** performance.now() before which no background score may start while interactive work runs. */
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
    this.#runner = options.runner;
    this.#pool = new HostKvCachePool(options.kvCacheBytes);
    this.#maxQueue = options.maxQueue;
    this.#maxPrefillTokensPerRound = options.maxPrefillTokensPerRound ?? 512;
    if (!Number.isInteger(options.maxQueue) || options.maxQueue < 0) {
      throw new RangeError(`maxQueue must be a non-negative integer, got ${options.maxQueue}`);
    }
    this.#prefixReuse = options.prefixReuse ?? null;
    this.#weightBytes = options.weightBytes ?? null;
    const minPrefix = this.#prefixReuse?.minPrefixTokens;
    if (minPrefix !== undefined && !(Number.isInteger(minPrefix) && minPrefix >= 1)) {
      throw new RangeError(`prefixReuse.minPrefixTokens must be a positive integer, got ${minPrefix}`);
    }
    for (const definition of options.variants) {
      if (this.#variants.has(definition.id)) {
        throw new DropserveError('DS_INVALID_ARGUMENT', `variant "${definition.id}" is defined twice`);
      }
      const def = resolveVariant(definition, options.config);
      const arena = this.#pool.addVariant(def.id, def.kvLayout);
      this.#variants.set(def.id, { def, arena, running: new Map(), waiting: 0, prefixReusedTokens: 0 });
    }
  }

  get kvCacheBytes(): number {
    return this.#pool.budgetBytes;
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
    return [...this.#variants.values()].map((v) => {
      const stats = this.#pool.stats(v.def.id);
      return {
        id: v.def.id,
        base,
        spec: v.def.spec,
        kvBytesPerToken: stats.bytesPerToken,
        ...(this.#weightBytes
          ? {
              weightBytesPerToken: weightBytesPerToken(this.#weightBytes, v.def.spec),
              weightFormat: this.#weightBytes.format,
            }
          : {}),
        kvCacheUsagePerc: stats.reservedBytes / this.#pool.budgetBytes,
        kvCacheBytesUsed: stats.reservedBytes,
        kvCacheBudgetBytes: this.#pool.budgetBytes,
        requestsRunning: v.running.size,
        requestsWaiting: v.waiting,
        ...(this.#prefixReuse ? { prefixReusedTokens: v.prefixReusedTokens } : {}),
      };
    });
  }

  /**
   * Queues a generation. Throws (synchronously) a DropserveError for invalid requests, unknown
   * variants, context overflow and a full queue; afterwards every outcome arrives through the sink.
   */
  submit(request: GenerateRequest, sink: EventSink): void {
    if (this.#isClosed) throw new DropserveError('DS_SHUTTING_DOWN', 'the server is shutting down');
    const variant = this.#variants.get(request.variant);
    if (!variant) {
      throw new DropserveError(
        'DS_NOT_FOUND',
        `The model \`${request.variant}\` does not exist. Available: ${[...this.#variants.keys()].join(', ')}`,
        { param: 'model' },
      );
    }
    if (this.#byId.has(request.requestId)) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `request id ${request.requestId} is already in use`);
    }
    const worstCaseTokens = this.#validate(request);
    if (this.#waiting.length >= this.#maxQueue) {
      throw new DropserveError(
        'DS_OVERLOADED',
        `server overloaded: ${this.#waiting.length} requests already waiting (--max-queue ${this.#maxQueue})`,
        { retryAfterSeconds: 1 },
      );
    }
    const needed = worstCaseTokens * variant.arena.bytesPerToken;
    if (needed > this.#pool.budgetBytes) {
      throw new DropserveError(
        'DS_KV_EXHAUSTED',
        `request needs ${needed} bytes of KV cache (${worstCaseTokens} tokens × ${variant.arena.bytesPerToken} B) but the whole KV budget is ${this.#pool.budgetBytes} bytes`,
      );
    }
    const eos = request.ignoreEos ? [] : this.config.eosTokenIds;
    const sequence: Sequence = {
      id: request.requestId,
      request,
      variant,
      sink,
      sampler: createSamplerState(request.sampling, request.promptTokenIds),
      stopIds: new Set([...eos, ...(request.stopTokenIds ?? [])]),
      worstCaseTokens,
      outputCount: 0,
      lastToken: -1,
      isAborted: false,
      timings: { arrivalMs: nowMs(), finishedMs: 0 },
    };
    this.#byId.set(sequence.id, sequence);
    variant.waiting++;
    // Background work queues behind every interactive request.
    if (request.priority === 'background') this.#waiting.push(sequence);
    else {
      const firstBackground = this.#waiting.findIndex((s) => s.request.priority === 'background');
      if (firstBackground < 0) this.#waiting.push(sequence);
      else this.#waiting.splice(firstBackground, 0, sequence);
    }
    this.#ensureLoop();
  }

  /** Cancels a sequence wherever it is; its slot is freed before the next decode step. */
  abort(requestId: string): void {
    const sequence = this.#byId.get(requestId);
    if (!sequence) return;
    sequence.isAborted = true;
    const index = this.#waiting.indexOf(sequence);
    if (index >= 0) {
      this.#waiting.splice(index, 1);
      sequence.variant.waiting--;
      this.#finish(sequence, 'abort');
    }
    this.#wakeLoop();
  }

  score(request: ScoreRequest): Promise<ScoreResult> {
    if (this.#isClosed) return Promise.reject(new DropserveError('DS_SHUTTING_DOWN', 'shutting down'));
    const variant = this.#variants.get(request.variant);
    if (!variant) {
      return Promise.reject(
        new DropserveError('DS_NOT_FOUND', `The model \`${request.variant}\` does not exist`),
      );
    }
    const n = request.tokenIds.length;
    if (n < 2 || request.fromIndex < 1 || request.fromIndex >= n || n > this.config.maxSeqLen) {
      return Promise.reject(
        new DropserveError(
          'DS_INVALID_ARGUMENT',
          `score needs 2..${this.config.maxSeqLen} tokens and 1 ≤ fromIndex < length; got ${n} tokens, fromIndex ${request.fromIndex}`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.#scores.push({ request, variant, resolve, reject });
      this.#ensureLoop();
    });
  }

  /** Stops admitting; gives running sequences graceMs to finish, then aborts the rest. */
  async close(graceMs = 0): Promise<void> {
    this.#isClosed = true;
    for (const s of [...this.#waiting]) this.abort(s.id);
    const deadline = Date.now() + graceMs;
    while (this.#byId.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    for (const id of [...this.#byId.keys()]) this.abort(id);
    for (const s of this.#scores.splice(0)) s.reject(new DropserveError('DS_SHUTTING_DOWN', 'shutting down'));
    this.#scoreJob?.pending.reject(new DropserveError('DS_SHUTTING_DOWN', 'shutting down'));
    this.#scoreJob = null;
    this.#wakeLoop();
    await this.#loopDone;
    await this.#runner.release();
  }

  /** Returns the worst-case token count; throws typed errors with the numbers. */
  #validate(request: GenerateRequest): number {
    const context = this.config.maxSeqLen;
    const promptLength = request.promptTokenIds.length;
    if (promptLength === 0) {
      throw new DropserveError('DS_INVALID_ARGUMENT', 'prompt is empty (it tokenized to 0 tokens)', {
        param: 'prompt',
      });
    }
    for (const id of request.promptTokenIds) {
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `prompt token id ${id} is out of range; this model's vocabulary has ${this.config.vocabSize} tokens`,
          { param: 'prompt' },
        );
      }
    }
    if (promptLength >= context) {
      throw new DropserveError(
        'DS_CONTEXT_OVERFLOW',
        `prompt has ${promptLength} tokens; this model's context is ${context}, which leaves no room to generate`,
        { param: 'prompt' },
      );
    }
    if (!Number.isInteger(request.maxTokens) || request.maxTokens < 1) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `max_tokens must be ≥ 1, got ${request.maxTokens}`, {
        param: 'max_tokens',
      });
    }
    if (promptLength + request.maxTokens > context) {
      throw new DropserveError(
        'DS_CONTEXT_OVERFLOW',
        `prompt has ${promptLength} tokens and max_tokens is ${request.maxTokens}: ${promptLength + request.maxTokens} tokens exceed this model's context of ${context}`,
        { param: 'max_tokens' },
      );
    }
    return promptLength + request.maxTokens;
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

  #hasWork(): boolean {
    if (this.#waiting.length > 0 || this.#scores.length > 0 || this.#scoreJob !== null) return true;
    for (const v of this.#variants.values()) if (v.running.size > 0) return true;
    return false;
  }

  async #loop(): Promise<void> {
    while (true) {
      this.#reapAborted();
      if (!this.#hasWork()) {
        if (this.#isClosed) return;
        this.onStepEnd?.();
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
        continue;
      }
      try {
        await this.#runRound();
      } catch (error) {
        this.#failEverything(error);
      }
      this.onStepEnd?.();
      // Lets aborts, new requests and worker messages in between model runs.
      await yieldToEventLoop();
    }
  }

  async #runRound(): Promise<void> {
    await this.#prefillWaiting();
    for (const variant of this.#variants.values()) {
      this.#reapAborted();
      if (variant.running.size > 0) {
        await this.#decodeStep(variant);
        this.onStepEnd?.();
      }
    }
    const interactiveScore = this.#scores.find((s) => s.request.priority !== 'background');
    if (interactiveScore) {
      this.#scores.splice(this.#scores.indexOf(interactiveScore), 1);
      try {
        interactiveScore.resolve(await this.#score(interactiveScore));
      } catch (error) {
        interactiveScore.reject(error);
      }
    } else if (this.#isBackgroundAllowed()) {
      await this.#advanceBackgroundScore();
    }
  }

  /** Background work runs only when no interactive request waits, and within its time share. */
  #isBackgroundAllowed(): boolean {
    if (this.#scoreJob === null && this.#scores.length === 0) return false;
    if (this.#waiting.some((s) => s.request.priority !== 'background')) return false;
    return !this.#hasInteractiveRunning() || performance.now() >= this.#backgroundNotBefore;
  }

  /**
   * Background scores run a chunk of SCORE_CHUNK_TOKENS per round, with their KV in a private
   * arena: an interactive request arriving meanwhile waits for one chunk, not a whole sequence. While
   * interactive sequences run, chunks are spaced so background work takes at most BACKGROUND_SHARE
   * of the engine's time.
   */
  async #advanceBackgroundScore(): Promise<void> {
    if (this.#scoreJob === null) {
      const pending = this.#scores.shift()!;
      const arena = createHostKvArena(pending.variant.def.kvLayout);
      arena.addRow('score', pending.request.tokenIds.length);
      const result: ScoreResult = { tokenLogprobs: [], argmaxIds: [], argmaxLogprobs: [] };
      if (pending.request.returnDistributions) result.distributions = [];
      this.#scoreJob = { pending, arena, nextToken: 0, result };
    }
    const job = this.#scoreJob;
    const started = performance.now();
    try {
      const isDone = await this.#scoreChunk(job);
      if (isDone) {
        this.#scoreJob = null;
        job.pending.resolve(job.result);
      }
    } catch (error) {
      this.#scoreJob = null;
      job.pending.reject(error);
    }
    if (this.#hasInteractiveRunning()) {
      const ms = performance.now() - started;
      this.#backgroundNotBefore = performance.now() + (ms * (1 - BACKGROUND_SHARE)) / BACKGROUND_SHARE;
    }
  }

  /** Feeds the next chunk of a score job; true once every scored position has its row. */
  async #scoreChunk(job: ScoreJob): Promise<boolean> {
    const { request, variant } = job.pending;
    const tokens = request.tokenIds;
    // Positions fed: 0..n-2 (the last token is only predicted). Rows kept: fromIndex-1..n-2.
    const end = tokens.length - 1;
    const start = job.nextToken;
    const seqLen = Math.min(SCORE_CHUNK_TOKENS, end - start);
    const firstScored = Math.max(start, request.fromIndex - 1);
    const scoredPositions = Array.from(
      { length: Math.max(0, start + seqLen - firstScored) },
      (_, i) => firstScored + i,
    );
    let kept = 0;
    const views = start === 0 ? [] : job.arena.rowViews(0);
    const output = await this.#runner.run({
      batchSize: 1,
      seqLen,
      inputIds: tokens.slice(start, start + seqLen),
      positionIds: Array.from({ length: seqLen }, (_, i) => start + i),
      mask: variant.def.mask,
      pastLengths: [start],
      past:
        start === 0
          ? this.#emptyPast(variant)
          : variant.def.mask.attnKeep.map((keep) => (keep ? views[kept++]! : null)),
      pastCapacity: start === 0 ? 0 : job.arena.tokenCapacity,
      logitsIndex: scoredPositions.map((p) => p - start),
    });
    variant.def.kvLayout.keptLayers.forEach((layer, i) => {
      job.arena.append(i, [0], seqLen, output.newKeys[layer]!, output.newValues[layer]!);
    });
    job.arena.advance([0], seqLen);
    this.#collectScores(job.result, request, output.logits, scoredPositions);
    job.nextToken = start + seqLen;
    return job.nextToken >= end;
  }

  /** Turns logits rows (one per scored position p, predicting tokens[p+1]) into score entries. */
  #collectScores(
    result: ScoreResult,
    request: ScoreRequest,
    logits: Float32Array,
    positions: number[],
  ): void {
    const vocab = this.config.vocabSize;
    positions.forEach((p, i) => {
      const row = logSoftmax(logits.subarray(i * vocab, (i + 1) * vocab));
      const best = argmax(row);
      result.tokenLogprobs.push(row[request.tokenIds[p + 1]!]!);
      result.argmaxIds.push(best);
      result.argmaxLogprobs.push(row[best]!);
      result.distributions?.push(row);
    });
  }

  #hasInteractiveRunning(): boolean {
    for (const v of this.#variants.values()) {
      for (const s of v.running.values()) if (s.request.priority !== 'background') return true;
    }
    return false;
  }

  /** Admits and prefills waiting sequences, in order, while KV fits and the round's budget lasts. */
  async #prefillWaiting(): Promise<void> {
    let prefilledTokens = 0;
    while (this.#waiting.length > 0 && prefilledTokens < this.#maxPrefillTokensPerRound) {
      const sequence = this.#waiting[0]!;
      const reservation = this.#pool.tryReserve(
        sequence.variant.def.id,
        sequence.id,
        sequence.worstCaseTokens,
      );
      // First come, first served: a sequence that does not fit yet blocks those behind it.
      if (!reservation) return;
      this.#waiting.shift();
      sequence.variant.waiting--;
      sequence.reservation = reservation;
      sequence.timings.scheduledMs = nowMs();
      sequence.variant.running.set(sequence.id, sequence);
      try {
        // A reused prefix is not computed, so it does not count against the round's budget.
        prefilledTokens += await this.#prefill(sequence);
      } catch (error) {
        prefilledTokens += sequence.request.promptTokenIds.length;
        this.#finish(sequence, 'error', undefined, error);
      }
      this.onStepEnd?.();
      await yieldToEventLoop();
      this.#reapAborted();
    }
  }

  /**
   * One B=1 run over the prompt. With a reused prefix of p tokens the run covers only positions
   * p..n-1, with the sequence's own row as past (GQA takes S > 1 with past for a batch of one).
   * Returns the prompt tokens computed.
   */
  async #prefill(sequence: Sequence): Promise<number> {
    const { variant } = sequence;
    const prompt = sequence.request.promptTokenIds;
    const row = variant.arena.addRow(sequence.id, sequence.worstCaseTokens);
    const reused = this.#reusePrefix(sequence, row);
    const rest = prompt.slice(reused);
    let kept = 0;
    const views = reused > 0 ? variant.arena.rowViews(row) : [];
    // NOTE: the run reads the arena in place; nothing may add or remove rows until it returns
    // (the loop is the only writer and awaits this run).
    const output = await this.#runner.run({
      batchSize: 1,
      seqLen: rest.length,
      inputIds: rest,
      positionIds: rest.map((_, i) => reused + i),
      mask: variant.def.mask,
      pastLengths: [reused],
      past:
        reused > 0
          ? variant.def.mask.attnKeep.map((keep) => (keep ? views[kept++]! : null))
          : this.#emptyPast(variant),
      pastCapacity: reused > 0 ? variant.arena.tokenCapacity : 0,
      logitsIndex: [rest.length - 1],
    });
    this.#writeKv(variant, [row], rest.length, output.newKeys, output.newValues);
    sequence.timings.prefillEndMs = nowMs();
    if (!sequence.isAborted) this.#acceptToken(sequence, output.logits);
    return rest.length;
  }

  /**
   * Copies the longest prompt prefix shared with a running sequence of the same variant into `row`;
   * returns its length (0 = none). At most n−1 tokens, so the last prompt position is computed: its
   * logits give the first token. A linear scan: running sequences per variant are few.
   */
  #reusePrefix(sequence: Sequence, row: number): number {
    if (!this.#prefixReuse) return 0;
    const { variant } = sequence;
    const prompt = sequence.request.promptTokenIds;
    let best = 0;
    let donorRow = -1;
    for (const donor of variant.running.values()) {
      if (donor === sequence) continue;
      const fromRow = variant.arena.rowOf(donor.id);
      const limit = Math.min(
        prompt.length - 1,
        donor.request.promptTokenIds.length,
        variant.arena.length(fromRow),
      );
      let shared = 0;
      while (shared < limit && donor.request.promptTokenIds[shared] === prompt[shared]) shared++;
      if (shared > best) {
        best = shared;
        donorRow = fromRow;
      }
    }
    if (best < this.#prefixReuse.minPrefixTokens) return 0;
    variant.arena.copyPrefix(donorRow, row, best);
    variant.prefixReusedTokens += best;
    return best;
  }

  async #decodeStep(variant: VariantState): Promise<void> {
    const { arena } = variant;
    const rows = Array.from({ length: arena.numRows }, (_, r) => r);
    const sequences = rows.map((r) => variant.running.get(arena.sequenceIdAt(r))!);
    const pastLengths = rows.map((r) => arena.length(r));
    const views = arena.pastViews();
    let kept = 0;
    const input: ForwardInput = {
      batchSize: rows.length,
      seqLen: 1,
      inputIds: sequences.map((s) => s.lastToken),
      positionIds: pastLengths,
      mask: variant.def.mask,
      pastLengths,
      past: variant.def.mask.attnKeep.map((keep) => (keep ? views[kept++]! : null)),
      pastCapacity: arena.tokenCapacity,
      logitsIndex: rows,
    };
    let output: Awaited<ReturnType<ForwardRunner['run']>>;
    try {
      output = await this.#runner.run(input);
    } catch (error) {
      for (const s of sequences) this.#finish(s, 'error', undefined, error);
      return;
    }
    this.#writeKv(variant, rows, 1, output.newKeys, output.newValues);
    const vocab = this.config.vocabSize;
    // Sampling may finish sequences, which compacts arena rows: rows are resolved before that.
    sequences.forEach((s, b) => {
      if (!s.isAborted) this.#acceptToken(s, output.logits.subarray(b * vocab, (b + 1) * vocab));
    });
  }

  #emptyPast(variant: VariantState): ({ key: Float32Array; value: Float32Array } | null)[] {
    return variant.def.mask.attnKeep.map((keep) =>
      keep ? { key: new Float32Array(0), value: new Float32Array(0) } : null,
    );
  }

  #writeKv(
    variant: VariantState,
    rows: number[],
    seqLen: number,
    newKeys: (Float32Array | null)[],
    newValues: (Float32Array | null)[],
  ): void {
    variant.def.kvLayout.keptLayers.forEach((layer, i) => {
      variant.arena.append(i, rows, seqLen, newKeys[layer]!, newValues[layer]!);
    });
    variant.arena.advance(rows, seqLen);
  }

  /** Samples the next token from one logits row and decides whether the sequence goes on. */
  #acceptToken(sequence: Sequence, logits: Float32Array): void {
    const { request } = sequence;
    const sampled = sampleToken(logits, request.sampling, sequence.sampler, {
      wantLogprob: request.logprobs,
      topLogprobs: request.topLogprobs,
      wantDistribution: request.recordDistributions,
    });
    const time = nowMs();
    if (sequence.stopIds.has(sampled.tokenId)) {
      this.#finish(sequence, 'stop', sampled.tokenId);
      return;
    }
    sequence.timings.firstTokenMs ??= time;
    sequence.timings.lastTokenMs = time;
    sequence.lastToken = sampled.tokenId;
    sequence.sink({
      type: 'token',
      tokenId: sampled.tokenId,
      index: sequence.outputCount,
      logprob: sampled.logprob,
      topLogprobs: sampled.topLogprobs,
      distribution: sampled.distribution,
      timeMs: time,
    });
    sequence.outputCount++;
    const total = request.promptTokenIds.length + sequence.outputCount;
    if (sequence.outputCount >= request.maxTokens || total >= this.config.maxSeqLen) {
      this.#finish(sequence, 'length');
    }
  }

  #reapAborted(): void {
    for (const variant of this.#variants.values()) {
      for (const s of [...variant.running.values()]) if (s.isAborted) this.#finish(s, 'abort');
    }
  }

  #finish(sequence: Sequence, reason: FinishReason, stopTokenId?: number, error?: unknown): void {
    if (!this.#byId.has(sequence.id)) return;
    this.#byId.delete(sequence.id);
    sequence.variant.running.delete(sequence.id);
    if (sequence.reservation) this.#pool.release(sequence.reservation);
    sequence.timings.finishedMs = nowMs();
    if (reason === 'error') {
      const message = error instanceof Error ? error.message : String(error);
      sequence.sink({
        type: 'finish',
        reason,
        usage: {
          promptTokens: sequence.request.promptTokenIds.length,
          completionTokens: sequence.outputCount,
        },
        timings: sequence.timings,
        variant: sequence.variant.def.id,
        error: { code: 'DS_ORT_RUN_FAILED', message },
      });
      return;
    }
    sequence.sink({
      type: 'finish',
      reason,
      stopTokenId,
      usage: { promptTokens: sequence.request.promptTokenIds.length, completionTokens: sequence.outputCount },
      timings: sequence.timings,
      variant: sequence.variant.def.id,
    });
  }

  #failEverything(error: unknown): void {
    for (const variant of this.#variants.values()) {
      for (const s of [...variant.running.values()]) this.#finish(s, 'error', undefined, error);
    }
  }

  /** One teacher-forced pass over the whole sequence; nothing is cached. */
  async #score(pending: PendingScore): Promise<ScoreResult> {
    const { request, variant } = pending;
    const tokens = request.tokenIds;
    const n = tokens.length;
    const positions = Array.from({ length: n - request.fromIndex }, (_, i) => request.fromIndex - 1 + i);
    const output = await this.#runner.run({
      batchSize: 1,
      seqLen: n,
      inputIds: tokens,
      positionIds: tokens.map((_, i) => i),
      mask: variant.def.mask,
      pastLengths: [0],
      past: this.#emptyPast(variant),
      pastCapacity: 0,
      logitsIndex: positions,
    });
    const result: ScoreResult = { tokenLogprobs: [], argmaxIds: [], argmaxLogprobs: [] };
    if (request.returnDistributions) result.distributions = [];
    this.#collectScores(result, request, output.logits, positions);
    return result;
  }
}
