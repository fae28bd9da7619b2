import type {
  EngineClient,
  GenerateEvent,
  GenerateRequest,
  ScoreRequest,
  ScoreResult,
  ServedModelInfo,
  VariantInfo,
} from '../../engine/client.ts';
import type { Tokenizer } from '../../engine/tokenizer/tokenizer.ts';

/** A generation the gate holds: admitted by the transport, not yet handed to the engine. */
export interface HeldRequest {
  request: GenerateRequest;
  /** The signal the transport passed: fires when the client leaves or shutdown cancels. */
  signal?: AbortSignal;
}

/**
 * The real engine with a door in front of generate(), opened by the test: it makes "a request is
 * in flight but has not reached the engine yet" a state the test holds for as long as it needs
 * (to start a drain, or to abort the client), instead of a moment it has to hit.
 * Everything else, and every generation once the door is open, goes to the real engine unchanged.
 */
export class GatedEngine implements EngineClient {
  readonly #inner: EngineClient;
  readonly #held: HeldRequest[] = [];
  readonly #onHeld = new Set<() => void>();
  #open!: () => void;
  readonly #opened = new Promise<void>((resolve) => {
    this.#open = resolve;
  });

  constructor(inner: EngineClient) {
    this.#inner = inner;
  }

  get model(): ServedModelInfo {
    return this.#inner.model;
  }

  get tokenizer(): Tokenizer {
    return this.#inner.tokenizer;
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    this.#held.push({ request, signal });
    for (const wake of this.#onHeld) wake();
    await this.#opened;
    yield* this.#inner.generate(request, signal);
  }

  /** Lets every held and later generation through to the engine. */
  open(): void {
    this.#open();
  }

  /** Resolves once `count` generations have reached the gate. */
  async held(count: number): Promise<HeldRequest[]> {
    while (this.#held.length < count) {
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          this.#onHeld.delete(wake);
          resolve();
        };
        this.#onHeld.add(wake);
      });
    }
    return this.#held.slice(0, count);
  }

  score(request: ScoreRequest, signal?: AbortSignal): Promise<ScoreResult> {
    return this.#inner.score(request, signal);
  }

  variants(): VariantInfo[] {
    return this.#inner.variants();
  }

  isReady(): boolean {
    return this.#inner.isReady();
  }

  close(graceMs?: number): Promise<void> {
    this.#open();
    return this.#inner.close(graceMs);
  }
}

/** Resolves when the signal fires (at once if it already has). */
export function aborted(signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return Promise.reject(new Error('the request carries no signal'));
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
