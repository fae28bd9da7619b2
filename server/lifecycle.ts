import type { EngineClient } from '../engine/client.ts';
import { DropserveError } from '../engine/errors.ts';

/**
 * Where the server is in its life, shared by the transports: the engine arrives after the sockets
 * listen (so /health can say 503 while the model loads), and shutdown drains in-flight requests before
 * cancelling them.
 *
 *   loading ──engine ready──▶ ready ──close()──▶ draining ──drained or grace over──▶ closed
 *      ├──load failed──▶ failed
 *      └──shutdown while loading──▶ draining
 */
export type LifecycleState = 'loading' | 'ready' | 'failed' | 'draining' | 'closed';

export interface InFlightRequest {
  /** Fires when the client disconnects or shutdown cancels in-flight work. */
  signal: AbortSignal;
  /** Ends the request's in-flight count (idempotent). */
  end(): void;
}

export class ServerLifecycle {
  #state: LifecycleState = 'loading';
  #engine: EngineClient | undefined;
  #loadError: unknown;
  #inFlight = 0;
  readonly #idleWaiters = new Set<() => void>();
  readonly #active = new Set<AbortController>();
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

  /** Aborted when in-flight work must stop (shutdown grace over). Read it; don't compose it. */
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

  /** Shutdown asked for while the model loads: /health says so, and the engine is not taken. */
  cancelLoading(): void {
    if (this.#state === 'loading') this.#state = 'draining';
  }

  /** Draining or closed: no new work; every response asks the client to close its connection. */
  get isShuttingDown(): boolean {
    return this.#state === 'draining' || this.#state === 'closed';
  }

  setLoadFailed(error: unknown): void {
    this.#loadError = error;
    if (this.#state === 'loading') this.#state = 'failed';
  }

  /**
   * Counts a request as in flight until `end()`, and gives it a signal that fires when the client
   * goes (clientSignal) or shutdown cancels in-flight work.
   *
   * NOTE: not AbortSignal.any([clientSignal, cancelSignal]): on Node 20 a signal composed with a
   * long-lived one, once it has had listeners, is never collected (~100 bytes a request, measured).
   * A per-request controller kept in a set, aborted by hand, leaks nothing.
   */
  beginRequest(clientSignal?: AbortSignal): InFlightRequest {
    this.#inFlight++;
    const controller = new AbortController();
    // The HTTP adapter aborts with a bare string; what the engine and the error table see is typed.
    const onClientAbort = (): void =>
      controller.abort(new DropserveError('DS_CANCELLED', 'the client closed the connection'));
    if (clientSignal?.aborted) onClientAbort();
    else clientSignal?.addEventListener('abort', onClientAbort, { once: true });
    if (this.#cancelAll.signal.aborted) controller.abort(this.#cancelAll.signal.reason);
    this.#active.add(controller);
    let isDone = false;
    const end = (): void => {
      if (isDone) return;
      isDone = true;
      clientSignal?.removeEventListener('abort', onClientAbort);
      this.#active.delete(controller);
      this.#inFlight--;
      if (this.#inFlight === 0) for (const wake of this.#idleWaiters) wake();
    };
    return { signal: controller.signal, end };
  }

  /** Stops admitting; resolves true if in-flight requests finished within graceMs, else cancels them. */
  async drain(graceMs: number): Promise<boolean> {
    if (this.#state !== 'closed') this.#state = 'draining';
    const isIdle = await this.waitIdle(graceMs);
    if (!isIdle) {
      const reason = new Error('shutdown grace period over');
      this.#cancelAll.abort(reason);
      for (const controller of this.#active) controller.abort(reason);
    }
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
