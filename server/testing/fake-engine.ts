import type {
  EngineClient,
  FinishReason,
  GenerateEvent,
  GenerateRequest,
  ScoreRequest,
  ScoreResult,
  ServedModelInfo,
  VariantInfo,
} from '../../engine/client.ts';
import { DropserveError } from '../../engine/errors.ts';
import { SeededRandom } from '../../engine/model/random.ts';
import { syntheticConfig } from '../../engine/model/synthetic.ts';
import type { DropSpec } from '../../engine/plan/plan.ts';
import { BYTE_OFFSET, ByteTokenizer } from '../../engine/tokenizer/byte-tokenizer.ts';

/**
 * An in-process stand-in for the engine, for unit tests of the transports: deterministic token
 * streams over a ByteTokenizer, a bounded admission queue, KV accounting and abort handling with the
 * same observable behaviour as EngineClient promises. It runs no model; end-to-end tests use the real
 * engine (tests/support/test-server.ts).
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
  info: Omit<
    VariantInfo,
    'kvCacheUsagePerc' | 'kvCacheBytesUsed' | 'requestsRunning' | 'requestsWaiting' | 'kvCacheBudgetBytes'
  >;
  running: number;
  waiting: number;
  /** Tokens held by this variant's running sequences. */
  tokensHeld: number;
}

export class FakeEngine implements EngineClient {
  readonly model: ServedModelInfo;
  readonly tokenizer: ByteTokenizer;
  /** The latest requests generate() saw (at most 64, so long runs stay flat), for assertions. */
  readonly recentRequests: GenerateRequest[] = [];
  /** How many sequences ended because their signal fired. */
  abortedCount = 0;
  readonly #options: Required<Omit<FakeEngineOptions, 'variants' | 'eosAfterTokens' | 'modelName'>> & {
    eosAfterTokens?: number;
  };
  readonly #variants = new Map<string, VariantState>();
  readonly #waiters: Waiter[] = [];
  #running = 0;
  #closed = false;

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
    const bytesPerLayer = 2 * config.numKvHeads * config.headDim * 4;
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
          kvBytesPerToken: bytesPerLayer * (numLayers - v.spec.dropAttention.length),
        },
        running: 0,
        waiting: 0,
        tokensHeld: 0,
      });
    }
  }

  isReady(): boolean {
    return !this.#closed;
  }

  variants(): VariantInfo[] {
    return [...this.#variants.values()].map((v) => {
      const used = v.tokensHeld * v.info.kvBytesPerToken;
      return {
        ...v.info,
        kvCacheBudgetBytes: this.#options.kvCacheBytes,
        kvCacheBytesUsed: used,
        kvCacheUsagePerc: used / this.#options.kvCacheBytes,
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
    const promptTokens = request.promptTokenIds.length;
    if (promptTokens + request.maxTokens > this.#options.maxSeqLen) {
      throw new DropserveError(
        'DS_CONTEXT_OVERFLOW',
        `context is ${this.#options.maxSeqLen} tokens; ${promptTokens} + ${request.maxTokens} requested`,
      );
    }
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
      variant.tokensHeld += promptTokens;
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
        variant.tokensHeld++;
        generated++;
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
        variant.tokensHeld -= promptTokens + generated;
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
