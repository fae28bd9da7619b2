import type {
  EngineClient,
  FinishEvent,
  GenerateEvent,
  GenerateRequest,
  ScoreRequest,
  ScoreResult,
  ServedModelInfo,
  VariantInfo,
} from '../../engine/client.ts';
import type { Tokenizer } from '../../engine/tokenizer/tokenizer.ts';
import type { ShadowScorer } from './shadow-scorer.ts';

export type ShadowSkipReason = 'unfinished' | 'empty';

export interface ShadowSamplingHooks {
  /** A request was picked for shadow scoring (at its start). */
  onSampled?: (variant: string) => void;
  /** A picked request is not submitted: it did not complete, or generated nothing. */
  onSkipped?: (variant: string, reason: ShadowSkipReason) => void;
}

/**
 * The engine as the transports see it when shadow scoring is on: for each HTTP/gRPC generation the
 * scorer decides at the start whether to sample it (pruned variants only, at the configured rate);
 * a sampled one runs with `recordDistributions` so its tokens carry the variant's own log-softmax
 * rows, and once it completed it is handed to the scorer. Every other call passes straight through.
 *
 * Sitting at the engine boundary, it covers every transport and every choice of a request (n > 1,
 * several prompts) alike, and needs no change in the serving code.
 *
 * NOTE: the submission is queued with setImmediate when the finish event arrives, so the transport
 * writes the response's last bytes first; the score itself runs in the engine at background priority
 * (only when no interactive request waits), so it never delays a response.
 */
export class ShadowSamplingEngine implements EngineClient {
  readonly #engine: EngineClient;
  readonly #scorer: ShadowScorer;
  readonly #hooks: ShadowSamplingHooks;

  constructor(engine: EngineClient, scorer: ShadowScorer, hooks: ShadowSamplingHooks = {}) {
    this.#engine = engine;
    this.#scorer = scorer;
    this.#hooks = hooks;
  }

  get model(): ServedModelInfo {
    return this.#engine.model;
  }

  get tokenizer(): Tokenizer {
    return this.#engine.tokenizer;
  }

  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
    const isClientRequest = request.transport === 'http' || request.transport === 'grpc';
    if (
      !isClientRequest ||
      request.priority === 'background' ||
      !this.#scorer.shouldSample(request.variant)
    ) {
      return this.#engine.generate(request, signal);
    }
    this.#hooks.onSampled?.(request.variant);
    return this.#recorded(request, signal);
  }

  score(request: ScoreRequest, signal?: AbortSignal): Promise<ScoreResult> {
    return this.#engine.score(request, signal);
  }

  variants(): VariantInfo[] {
    return this.#engine.variants();
  }

  isReady(): boolean {
    return this.#engine.isReady();
  }

  close(graceMs?: number): Promise<void> {
    return this.#engine.close(graceMs);
  }

  async *#recorded(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    const completionTokenIds: number[] = [];
    const distributions: (Float32Array | undefined)[] = [];
    let finish: FinishEvent | undefined;
    try {
      for await (const event of this.#engine.generate({ ...request, recordDistributions: true }, signal)) {
        if (event.type === 'token') {
          completionTokenIds.push(event.tokenId);
          distributions.push(event.distribution);
        } else {
          finish = event;
          this.#submitLater(request, finish, completionTokenIds, distributions);
        }
        yield event;
      }
    } finally {
      if (finish === undefined) this.#hooks.onSkipped?.(request.variant, 'unfinished');
    }
  }

  #submitLater(
    request: GenerateRequest,
    finish: FinishEvent,
    completionTokenIds: number[],
    distributions: (Float32Array | undefined)[],
  ): void {
    if (finish.reason !== 'stop' && finish.reason !== 'length') {
      this.#hooks.onSkipped?.(request.variant, 'unfinished');
      return;
    }
    if (completionTokenIds.length === 0) {
      this.#hooks.onSkipped?.(request.variant, 'empty');
      return;
    }
    setImmediate(() => {
      // The scorer reports its own outcome (scored, or dropped as busy/error) through its callbacks.
      void this.#scorer.submit({
        variant: request.variant,
        promptTokenIds: request.promptTokenIds,
        completionTokenIds,
        distributions,
      });
    });
  }
}
