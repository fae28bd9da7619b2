import type { EngineClient } from '../engine/client.ts';

/**
 * Where the server is in its life, shared by the transports: the engine arrives after the sockets
 * listen (so /health can say 503 while the model loads), and shutdown drains in-flight requests before
 * cancelling them.
 *
 *   loading ──engine ready──▶ ready ──close()──▶ draining ──grace over──▶ closed
 *      └──load failed──▶ failed
 */
export type LifecycleState = 'loading' | 'ready' | 'failed' | 'draining' | 'closed';

export class ServerLifecycle {
  #state: LifecycleState = 'loading';
  #engine: EngineClient | undefined;
  #loadError: unknown;
  #inFlight = 0;
  readonly #idleWaiters = new Set<() => void>();
  /** Fires when the grace period is over: every request still running is cancelled. */
  readonly #cancelAll = new AbortController();

  get state(): LifecycleState {
    return this.#state;
  }

  get engine(): EngineClient | undefined {
    return this.#engine;
  }

  get loadError(): unknown {
    return this.#loadError;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Aborted when in-flight work must stop (shutdown grace over). */
  get cancelSignal(): AbortSignal {
    return this.#cancelAll.signal;
  }

  /** Ready and admitting requests. */
  get isServing(): boolean {
    return this.#state === 'ready' && this.#engine !== undefined && this.#engine.isReady();
  }

  setEngine(engine: EngineClient): void {
    if (this.#state !== 'loading') return;
    this.#engine = engine;
    this.#state = 'ready';
  }

  setLoadFailed(error: unknown): void {
    this.#loadError = error;
    if (this.#state === 'loading') this.#state = 'failed';
  }

  /** Counts a request until the returned function is called (once). */
  beginRequest(): () => void {
    this.#inFlight++;
    let isDone = false;
    return () => {
      if (isDone) return;
      isDone = true;
      this.#inFlight--;
      if (this.#inFlight === 0) for (const wake of this.#idleWaiters) wake();
    };
  }

  /** Stops admitting; resolves true if in-flight requests finished within graceMs, else cancels them. */
  async drain(graceMs: number): Promise<boolean> {
    if (this.#state !== 'closed') this.#state = 'draining';
    const isIdle = await this.waitIdle(graceMs);
    if (!isIdle) this.#cancelAll.abort(new Error('shutdown grace period over'));
    return isIdle;
  }

  /** Resolves true once no request is in flight, false if maxMs passes first. */
  async waitIdle(maxMs: number): Promise<boolean> {
    if (this.#inFlight === 0) return true;
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.#idleWaiters.delete(wake);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#idleWaiters.delete(wake);
        resolve(false);
      }, maxMs);
      this.#idleWaiters.add(wake);
    });
  }

  markClosed(): void {
    this.#state = 'closed';
  }
}
