import type { GenerateEvent, GenerateRequest, VariantInfo } from '../../engine/client.ts';
import {
  type EngineOptions,
  engineCoreOptions,
  InProcessEngine,
  servedModelInfo,
} from '../../engine/engine.ts';
import type { ForwardInput, ForwardOutput } from '../../engine/graph/io.ts';
import { ModelSession } from '../../engine/graph/model-session.ts';
import { needsHiddenStates } from '../../engine/kv-placement.ts';
import { EngineCore } from '../../engine/runtime/engine-core.ts';
import type { ForwardRunner } from '../../engine/runtime/forward-runner.ts';

/**
 * A real model session behind a gate the test controls. Every forward run still runs on the real
 * ONNX session, but a run the test's predicate holds waits until the test changes its mind and calls
 * recheck(). It turns "a sequence finishes before its client's abort reaches the engine" from a
 * race into a state the test can rule out: hold the run that would produce a sequence's last token
 * until every abort has arrived.
 */
export class GatedRunner implements ForwardRunner {
  readonly #inner: ForwardRunner;
  readonly #isHeld: (input: ForwardInput) => boolean;
  #wakers: (() => void)[] = [];
  /** Runs waiting at the gate right now. */
  heldRuns = 0;

  constructor(inner: ForwardRunner, isHeld: (input: ForwardInput) => boolean) {
    this.#inner = inner;
    this.#isHeld = isHeld;
  }

  async run(input: ForwardInput): Promise<ForwardOutput> {
    while (this.#isHeld(input)) {
      this.heldRuns++;
      await new Promise<void>((resolve) => this.#wakers.push(resolve));
      this.heldRuns--;
    }
    return this.#inner.run(input);
  }

  /** Held runs ask the predicate again (call after changing what it depends on). */
  recheck(): void {
    for (const wake of this.#wakers.splice(0)) wake();
  }

  release(): Promise<void> {
    this.recheck();
    return this.#inner.release();
  }
}

/**
 * InProcessEngine that counts the cancellations reaching it: a generation whose signal fires while
 * it runs (the client left, the transport cancelled it). The count moves in the same dispatch as
 * EngineCore.abort(), so "n aborts counted" means n sequences are already marked aborted.
 */
export class CancelCountingEngine extends InProcessEngine {
  cancellations = 0;
  /** Called after each cancellation (createGatedEngine rechecks the gate here). */
  onCancellation: (() => void) | null = null;
  /** Hears every answer variants() gives: what GET /v1/variants and /metrics showed a client. */
  onVariants: ((infos: VariantInfo[]) => void) | null = null;

  override variants(): VariantInfo[] {
    const infos = super.variants();
    this.onVariants?.(infos);
    return infos;
  }

  override async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const onAbort = (): void => {
      this.cancellations++;
      this.onCancellation?.();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      yield* super.generate(request, signal);
    } finally {
      // A finished generation's signal may still fire (the transport tidies up): not a cancellation.
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

/**
 * The in-process engine as createEngine() builds it, with its model runs behind `gate`. The gate
 * is rechecked after every cancellation, so a predicate may wait for engine.cancellations.
 */
export async function createGatedEngine(
  options: EngineOptions,
  isHeld: (input: ForwardInput) => boolean,
): Promise<{ engine: CancelCountingEngine; gate: GatedRunner }> {
  const { model } = options;
  const session = await ModelSession.create(model.config, model.weights, {
    threads: options.threads ?? 1,
    outputHiddenStates: needsHiddenStates(options.variants),
  });
  const gate = new GatedRunner(session, isHeld);
  const info = servedModelInfo(options);
  const core = new EngineCore(engineCoreOptions(options, info.name, gate));
  const engine = new CancelCountingEngine(core, info, model.tokenizer);
  engine.onCancellation = () => gate.recheck();
  return { engine, gate };
}

/** The highest token position a forward run computes, over all its rows. */
export function lastPosition(input: ForwardInput): number {
  return Math.max(...input.positionIds);
}
