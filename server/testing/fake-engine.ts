import type {
  EngineClient,
  FinishReason,
  GenerateEvent,
  GenerateRequest,
  KvAdmission,
  ScoreRequest,
  ScoreResult,
  ServedModelInfo,
  VariantInfo,
} from '../../engine/client.ts';
import { DropserveError } from '../../engine/errors.ts';
import { kvBytesPerToken } from '../../engine/graph/kv-bytes.ts';
import { SeededRandom } from '../../engine/model/random.ts';
import { syntheticConfig } from '../../engine/model/synthetic.ts';
import type { DropSpec } from '../../engine/plan/plan.ts';
import { validateGenerateRequest } from '../../engine/request/validate-generate.ts';
import { BYTE_OFFSET, ByteTokenizer } from '../../engine/tokenizer/byte-tokenizer.ts';
import { blockAligned, DEFAULT_KV_BLOCK_TOKENS } from '../../kv-cache/kv-layout.ts';

/**
 * An in-process stand-in for the engine, for unit tests of the transports: deterministic token
 * streams over a ByteTokenizer, a bounded admission queue, KV accounting in blocks, the engine's
 * request validation and abort handling with the same observable behaviour as EngineClient promises.
 * It runs no model and never preempts on its own; end-to-end tests use the real engine
 * (tests/support/test-server.ts).
 */
export interface FakeEngineOptions {
  modelName?: string;
  /** Pruned variants besides the full model, served as "<model>:<name>". */
  variants?: { name: string; spec: DropSpec }[];
  numLayers?: number;
  maxSeqLen?: number;
  /** Sequences decoding at once; the rest wait. */
  maxRunning?: number;
  /** Waiting sequences beyond which generate() throws DS_OVERLOADED. */
  maxQueue?: number;
  /** Milliseconds between tokens (0 = as fast as the event loop allows). */
  tokenDelayMs?: number;
  kvCacheBytes?: number;
  /** Tokens per KV block (default 16), reported and used for the byte counts. */
  kvBlockTokens?: number;
  /** Reported only: the fake admits by maxRunning (default on-demand). */
  kvAdmission?: KvAdmission;
  /** Emit EOS after this many tokens (never when absent). */
  eosAfterTokens?: number;
}

const PRINTABLE_FIRST = 0x20;
const PRINTABLE_COUNT = 0x7f - 0x20;

interface Waiter {
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface VariantState {
  info: Pick<VariantInfo, 'id' | 'base' | 'spec' | 'kvBytesPerToken'>;
  running: number;
  waiting: number;
  /** Tokens each running sequence holds (prompt + generated so far). */
  sequenceTokens: Map<object, number>;
  numPreemptions: number;
}

export class FakeEngine implements EngineClient {
  readonly model: ServedModelInfo;
  readonly tokenizer: ByteTokenizer;
  /** The latest requests generate() saw (at most 64, so long runs stay flat), for assertions. */
  readonly recentRequests: GenerateRequest[] = [];
  /** How many sequences ended because their signal fired. */
  abortedCount = 0;
  readonly #options: Required<
    Omit<FakeEngineOptions, 'variants' | 'eosAfterTokens' | 'modelName' | 'kvBlockTokens' | 'kvAdmission'>
  > & {
    eosAfterTokens?: number;
  };
  readonly #variants = new Map<string, VariantState>();
  readonly #waiters: Waiter[] = [];
  #running = 0;
  #closed = false;
  readonly #kvBlockTokens: number;
  readonly #kvAdmission: KvAdmission;

  constructor(options: FakeEngineOptions = {}) {
    const numLayers = options.numLayers ?? 4;
    const config = syntheticConfig({
      numLayers,
      dim: 64,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      vocabSize: 300,
      maxSeqLen: options.maxSeqLen ?? 256,
    });
    const name = options.modelName ?? 'fake-model';
    this.model = {
      name,
      source: { kind: 'synthetic', id: name, description: 'fake engine for transport tests' },
      config,
      createdAt: 1_700_000_000,
    };
    this.tokenizer = new ByteTokenizer(config.vocabSize);
    this.#options = {
      numLayers,
      maxSeqLen: config.maxSeqLen,
      maxRunning: options.maxRunning ?? 64,
      maxQueue: options.maxQueue ?? 256,
      tokenDelayMs: options.tokenDelayMs ?? 0,
      kvCacheBytes: options.kvCacheBytes ?? 64 * 1024 * 1024,
      eosAfterTokens: options.eosAfterTokens,
    };
    this.#kvBlockTokens = options.kvBlockTokens ?? DEFAULT_KV_BLOCK_TOKENS;
    this.#kvAdmission = options.kvAdmission ?? 'on-demand';
    const all = [
      { name: '', spec: { dropAttention: [], dropMlp: [] } as DropSpec },
      ...(options.variants ?? []),
    ];
    for (const v of all) {
      const id = v.name === '' ? name : `${name}:${v.name}`;
      this.#variants.set(id, {
        info: {
          id,
          base: name,
          spec: v.spec,
          kvBytesPerToken: kvBytesPerToken(config, v.spec.dropAttention),
        },
        running: 0,
        waiting: 0,
        sequenceTokens: new Map(),
        numPreemptions: 0,
      });
    }
  }

  isReady(): boolean {
    return !this.#closed;
  }

  /**
   * Counts one preemption of `variant`, as the engine does when it frees a sequence's KV to recompute
   * it later. The fake never preempts by itself; tests of how preemptions are reported call this.
   */
  countPreemption(variant: string): void {
    const state = this.#variants.get(variant);
    if (!state) throw new RangeError(`no variant ${variant}`);
    state.numPreemptions++;
  }

  variants(): VariantInfo[] {
    return [...this.#variants.values()].map((v) => {
      const block = this.#kvBlockTokens;
      const lengths = [...v.sequenceTokens.values()];
      const usedTokens = lengths.reduce((sum, tokens) => sum + blockAligned(tokens, block), 0);
      // As the engine's batch-major arena: every row padded to the longest, in whole blocks.
      const allocatedTokens = lengths.length * blockAligned(Math.max(0, ...lengths), block);
      const used = usedTokens * v.info.kvBytesPerToken;
      return {
        ...v.info,
        kvCacheBudgetBytes: this.#options.kvCacheBytes,
        kvCacheBytesUsed: used,
        kvCacheBytesAllocated: allocatedTokens * v.info.kvBytesPerToken,
        kvCacheUsagePerc: used / this.#options.kvCacheBytes,
        kvBlockTokens: block,
        kvCachePlacement: 'host',
        kvAdmission: this.#kvAdmission,
        numPreemptions: v.numPreemptions,
        requestsRunning: v.running,
        requestsWaiting: v.waiting,
      };
    });
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    this.recentRequests.push(request);
    if (this.recentRequests.length > 64) this.recentRequests.shift();
    const arrivalMs = performance.timeOrigin + performance.now();
    const variant = this.#variants.get(request.variant);
    if (this.#closed) throw new DropserveError('DS_SHUTTING_DOWN', 'engine is shutting down');
    if (!variant) throw new DropserveError('DS_NOT_FOUND', `unknown variant ${request.variant}`);
    validateGenerateRequest(request, this.model.config);
    const promptTokens = request.promptTokenIds.length;
    const timings = { arrivalMs, scheduledMs: undefined as number | undefined };
    const finish = (reason: FinishReason, completionTokens: number, extra = {}): GenerateEvent => {
      const now = performance.timeOrigin + performance.now();
      return {
        type: 'finish',
        reason,
        usage: { promptTokens, completionTokens },
        timings: { ...timings, ...extra, finishedMs: now },
        variant: request.variant,
      };
    };
    await this.#admit(variant, signal);
    let generated = 0;
    let isRunning = false;
    const sequence = {};
    let firstTokenMs: number | undefined;
    let lastTokenMs: number | undefined;
    const stamps = (): object => ({ prefillEndMs: firstTokenMs, firstTokenMs, lastTokenMs });
    try {
      if (signal?.aborted) {
        this.abortedCount++;
        yield finish('abort', 0);
        return;
      }
      timings.scheduledMs = performance.timeOrigin + performance.now();
      isRunning = true;
      variant.running++;
      variant.sequenceTokens.set(sequence, promptTokens);
      const rng = new SeededRandom(request.sampling.seed ?? Math.floor(Math.random() * 2 ** 32));
      const eos = this.tokenizer.eosTokenIds[0]!;
      while (generated < request.maxTokens) {
        await this.#tick(signal);
        if (signal?.aborted) {
          this.abortedCount++;
          yield finish('abort', generated, stamps());
          return;
        }
        const wantsEos =
          this.#options.eosAfterTokens !== undefined && generated >= this.#options.eosAfterTokens;
        const tokenId = wantsEos
          ? eos
          : BYTE_OFFSET + PRINTABLE_FIRST + Math.floor(rng.next() * PRINTABLE_COUNT);
        const stopIds = request.stopTokenIds ?? [];
        if ((tokenId === eos && !request.ignoreEos) || stopIds.includes(tokenId)) {
          yield { ...finish('stop', generated, stamps()), stopTokenId: tokenId } as GenerateEvent;
          return;
        }
        const timeMs = performance.timeOrigin + performance.now();
        firstTokenMs ??= timeMs;
        lastTokenMs = timeMs;
        generated++;
        variant.sequenceTokens.set(sequence, promptTokens + generated);
        const logprob = -1 - (tokenId % 7) / 10;
        yield {
          type: 'token',
          tokenId,
          index: generated - 1,
          timeMs,
          logprob: request.logprobs ? logprob : undefined,
          topLogprobs: request.topLogprobs
            ? Array.from({ length: request.topLogprobs }, (_, k) => ({
                tokenId: k === 0 ? tokenId : BYTE_OFFSET + 0x41 + k,
                logprob: logprob - k,
              }))
            : undefined,
        };
      }
      yield finish('length', generated, stamps());
    } finally {
      if (isRunning) {
        variant.running--;
        variant.sequenceTokens.delete(sequence);
      }
      this.#release();
    }
  }

  async score(request: ScoreRequest): Promise<ScoreResult> {
    if (!this.#variants.has(request.variant)) throw new DropserveError('DS_NOT_FOUND', request.variant);
    const n = request.tokenIds.length - request.fromIndex;
    const tokenLogprobs = request.tokenIds.slice(request.fromIndex).map((id) => -1 - (id % 5) / 10);
    const result: ScoreResult = {
      tokenLogprobs,
      argmaxIds: Array(n).fill(BYTE_OFFSET + 0x41),
      argmaxLogprobs: Array(n).fill(-0.5),
    };
    if (request.returnDistributions) {
      result.distributions = Array.from({ length: n }, (_, i) => {
        const row = new Float32Array(this.tokenizer.vocabSize).fill(-20);
        row[BYTE_OFFSET + 0x41] = -0.5;
        row[request.tokenIds[request.fromIndex + i]!] = tokenLogprobs[i]!;
        return row;
      });
    }
    return result;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) {
      w.reject(new DropserveError('DS_SHUTTING_DOWN', 'engine closed'));
    }
  }

  async #admit(variant: VariantState, signal?: AbortSignal): Promise<void> {
    if (this.#running < this.#options.maxRunning) {
      this.#running++;
      return;
    }
    if (this.#waiters.length >= this.#options.maxQueue) {
      throw new DropserveError('DS_OVERLOADED', 'waiting queue is full', { retryAfterSeconds: 1 });
    }
    variant.waiting++;
    try {
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = { resolve, reject };
        this.#waiters.push(waiter);
        signal?.addEventListener(
          'abort',
          () => {
            const at = this.#waiters.indexOf(waiter);
            if (at >= 0) {
              this.#waiters.splice(at, 1);
              // Counted as running so the finally below balances it.
              this.#running++;
              resolve();
            }
          },
          { once: true },
        );
      });
    } finally {
      variant.waiting--;
    }
  }

  #release(): void {
    const next = this.#waiters.shift();
    if (next) next.resolve();
    else this.#running--;
  }

  /** Waits for the next token's time; a cancelled sequence does not wait for it. */
  #tick(signal?: AbortSignal): Promise<void> {
    const ms = this.#options.tokenDelayMs;
    if (ms === 0) return new Promise((resolve) => setImmediate(resolve));
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

export function createFakeEngine(options: FakeEngineOptions = {}): FakeEngine {
  return new FakeEngine(options);
}
