import { Worker } from 'node:worker_threads';
import type {
  EngineClient,
  GenerateEvent,
  GenerateRequest,
  ScoreRequest,
  ScoreResult,
  ServedModelInfo,
  VariantInfo,
} from '../client.ts';
import {
  DEFAULT_MAX_QUEUE,
  defaultKvCacheBytes,
  type EngineOptions,
  kvMemoryOptions,
  servedModelInfo,
  variantDefinitions,
} from '../engine.ts';
import { DropserveError } from '../errors.ts';
import type { LoadedModel } from '../model/loaded-model.ts';
import { abortedBeforeStart } from '../runtime/aborted-before-start.ts';
import { EventQueue } from '../runtime/event-queue.ts';
import { epochMs, type StartupPhase } from '../startup-phases.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { FromWorker, ToWorker } from './protocol.ts';

/**
 * EngineClient whose engine runs in a worker thread. The tokenizer and model facts stay on this
 * thread (transports need them synchronously); weights are handed to the worker once.
 */
export class WorkerEngine implements EngineClient {
  readonly model: ServedModelInfo;
  readonly tokenizer: Tokenizer;
  readonly #worker: Worker;
  readonly #streams = new Map<string, EventQueue<GenerateEvent>>();
  readonly #scores = new Map<number, { resolve: (r: ScoreResult) => void; reject: (e: unknown) => void }>();
  #nextScoreId = 1;
  #variants: VariantInfo[] = [];
  #isReady = false;
  #spawnedAtEpochMs = 0;
  /** Where the start-up time went, once ready: worker start, graph build, encode, ORT session. */
  startupPhases: StartupPhase[] = [];
  #closed: Promise<void> | null = null;
  #onClosed: (() => void) | null = null;

  private constructor(worker: Worker, model: ServedModelInfo, tokenizer: Tokenizer) {
    this.#worker = worker;
    this.model = model;
    this.tokenizer = tokenizer;
  }

  static async create(options: EngineOptions): Promise<WorkerEngine> {
    const { model } = options;
    const info = servedModelInfo(options);
    const { name } = info;
    // Before the worker starts: a bad variant must not leave a thread behind.
    const variants = variantDefinitions(name, options.variants, model.builtInPlan);
    const spawnedAtEpochMs = epochMs();
    const worker = new Worker(workerEntry());
    const engine = new WorkerEngine(worker, info, model.tokenizer);
    engine.#spawnedAtEpochMs = spawnedAtEpochMs;
    const ready = new Promise<void>((resolve, reject) => {
      engine.#onReady = resolve;
      engine.#onInitFailed = reject;
      worker.once('error', reject);
    });
    worker.on('message', (m: FromWorker) => engine.#handle(m));
    worker.on('error', (error) => engine.#failAll(error));
    worker.on('exit', () => engine.#failAll(new DropserveError('DS_INTERNAL', 'engine worker exited')));
    const init: ToWorker = {
      type: 'init',
      config: model.config,
      weights: model.weights,
      weightFilePath: model.weightFile?.path,
      variants,
      kvCacheBytes: options.kvCacheBytes ?? defaultKvCacheBytes(),
      maxQueue: options.maxQueue ?? DEFAULT_MAX_QUEUE,
      device: options.device ?? 'cpu',
      threads: options.threads ?? 1,
      prefixReuse: options.prefixReuse,
      kvMemory: kvMemoryOptions(options),
    };
    // Transferred, not cloned: a second copy of the weights would double peak memory at load.
    worker.postMessage(init, weightBuffers(model));
    try {
      await ready;
    } catch (error) {
      await worker.terminate();
      throw error;
    }
    return engine;
  }

  #onReady: (() => void) | null = null;
  #onInitFailed: ((e: unknown) => void) | null = null;

  #handle(message: FromWorker): void {
    switch (message.type) {
      case 'ready':
        this.startupPhases = [
          {
            phase: `worker start (${COMPILED ? 'compiled' : 'tsx'}) + weight transfer`,
            ms: Math.round((message.receivedInitAtEpochMs - this.#spawnedAtEpochMs) * 10) / 10,
          },
          ...message.phases,
        ];
        this.#variants = message.variants;
        this.#isReady = true;
        this.#onReady?.();
        return;
      case 'initFailed':
        this.#onInitFailed?.(DropserveError.fromJSON(message.error));
        return;
      case 'events':
        this.#variants = message.variants;
        for (const { requestId, event } of message.events) {
          const stream = this.#streams.get(requestId);
          if (!stream) continue;
          stream.push(event);
          if (event.type === 'finish') {
            stream.close();
            this.#streams.delete(requestId);
          }
        }
        return;
      case 'rejected': {
        const stream = this.#streams.get(message.requestId);
        this.#streams.delete(message.requestId);
        stream?.fail(DropserveError.fromJSON(message.error));
        return;
      }
      case 'scoreResult': {
        const waiter = this.#scores.get(message.id);
        this.#scores.delete(message.id);
        if (message.error) waiter?.reject(DropserveError.fromJSON(message.error));
        else waiter?.resolve(message.result!);
        return;
      }
      case 'closed':
        this.#onClosed?.();
        return;
    }
  }

  #failAll(error: unknown): void {
    this.#isReady = false;
    for (const stream of this.#streams.values()) stream.fail(error);
    this.#streams.clear();
    for (const waiter of this.#scores.values()) waiter.reject(error);
    this.#scores.clear();
  }

  #post(message: ToWorker): void {
    this.#worker.postMessage(message);
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    if (signal?.aborted) {
      yield abortedBeforeStart(request);
      return;
    }
    if (!this.#isReady) throw new DropserveError('DS_SHUTTING_DOWN', 'the engine is not running');
    if (this.#streams.has(request.requestId)) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `request id ${request.requestId} is already in use`);
    }
    const stream = new EventQueue<GenerateEvent>();
    this.#streams.set(request.requestId, stream);
    this.#post({ type: 'generate', request });
    const onAbort = (): void => this.#post({ type: 'abort', requestId: request.requestId });
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      yield* stream;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!stream.isDone) {
        // The worker's finish event for this id is still to come; nobody reads it now.
        this.#post({ type: 'abort', requestId: request.requestId });
      }
    }
  }

  score(request: ScoreRequest): Promise<ScoreResult> {
    const id = this.#nextScoreId++;
    return new Promise((resolve, reject) => {
      this.#scores.set(id, { resolve, reject });
      this.#post({ type: 'score', id, request });
    });
  }

  variants(): VariantInfo[] {
    return this.#variants;
  }

  isReady(): boolean {
    return this.#isReady;
  }

  close(graceMs = 0): Promise<void> {
    this.#closed ??= (async () => {
      const closed = new Promise<void>((resolve) => {
        this.#onClosed = resolve;
      });
      this.#post({ type: 'close', graceMs });
      // A wedged worker must not hold shutdown hostage; unref'd so a clean close exits at once.
      await Promise.race([closed, new Promise((r) => setTimeout(r, graceMs + 5000).unref())]);
      this.#isReady = false;
      await this.#worker.terminate();
    })();
    return this.#closed;
  }
}

/**
 * Set by scripts/build.mjs in the compiled bundle: where the compiled worker is, relative to this
 * source file (import.meta.url names the source file in the bundle too). Compiled code starts the
 * compiled worker; the sources start bootstrap.mjs, which loads the worker through tsx.
 */
declare const __DROPSERVE_COMPILED_WORKER__: string | undefined;

const COMPILED = typeof __DROPSERVE_COMPILED_WORKER__ === 'string';

function workerEntry(): URL {
  return COMPILED
    ? new URL(__DROPSERVE_COMPILED_WORKER__!, import.meta.url)
    : new URL('./bootstrap.mjs', import.meta.url);
}

/** Every distinct buffer behind the weights (a tied head shares the embedding's). */
function weightBuffers({ weights, weightFile }: LoadedModel): ArrayBuffer[] {
  // Views of a checkpoint image: the image is the one buffer (cloning it would copy every weight).
  if (weightFile) return [weightFile.image];
  const arrays: Float32Array[] = [weights.tokenEmbedding, weights.finalNorm, weights.lmHead];
  for (const layer of weights.layers) {
    for (const t of Object.values(layer)) if (t instanceof Float32Array) arrays.push(t);
  }
  const buffers = new Set<ArrayBuffer>();
  for (const a of arrays) {
    // A view into a larger (possibly pooled) buffer must be cloned, not taken away from its owner.
    if (a.buffer instanceof ArrayBuffer && a.byteOffset === 0 && a.byteLength === a.buffer.byteLength) {
      buffers.add(a.buffer);
    }
  }
  return [...buffers];
}

/**
 * Starts the engine in a worker thread. The worker takes ownership of `options.model.weights`:
 * their buffers are transferred, so the caller must not use the weight arrays afterwards.
 */
export function createWorkerEngine(options: EngineOptions): Promise<WorkerEngine> {
  return WorkerEngine.create(options);
}
