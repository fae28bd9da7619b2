import { totalmem } from 'node:os';
import type {
  EngineClient,
  GenerateEvent,
  GenerateRequest,
  KvAdmission,
  KvCachePlacement,
  ScoreRequest,
  ScoreResult,
  ServedModelInfo,
  VariantInfo,
} from './client.ts';
import type { Device } from './device.ts';
import { DropserveError } from './errors.ts';
import type { KvDtype } from './graph/kv-dtype.ts';
import { createEngineRuntime } from './kv-placement.ts';
import type { BuiltInPlan, LoadedModel } from './model/loaded-model.ts';
import type { AdaptiveSpec } from './plan/adaptive-mask.ts';
import { withBuiltInPlan } from './plan/built-in-plan.ts';
import type { DropSpec } from './plan/plan.ts';
import { weightByteTable } from './quant/weight-bytes.ts';
import { abortedBeforeStart } from './runtime/aborted-before-start.ts';
import { EngineCore, type EngineCoreOptions, type PrefixReuseOptions } from './runtime/engine-core.ts';
import { EventQueue } from './runtime/event-queue.ts';
import type { ForwardRunner } from './runtime/forward-runner.ts';
import { type VariantDefinition, variantId } from './runtime/variant.ts';
import type { Tokenizer } from './tokenizer/tokenizer.ts';

export interface EngineOptions {
  model: LoadedModel;
  /** Name the full model is served as (default: the source id). */
  servedModelName?: string;
  /**
   * Pruned variants, served as "<model>:<name>" next to the full model; an adaptive one drops no
   * fixed sublayers (spec empty) but what each prompt's prefill finds least influential.
   */
  variants?: { name: string; spec: DropSpec; adaptive?: AdaptiveSpec }[];
  /** KV budget for all variants together (default: a quarter of RAM). */
  kvCacheBytes?: number;
  /** Requests allowed to wait for their prefill (default 1024). */
  maxQueue?: number;
  device?: Device;
  threads?: number;
  /** Reuse a running sequence's KV for a shared prompt prefix (default: off). */
  prefixReuse?: PrefixReuseOptions;
  /** MatMulNBits accuracy_level of quantized weights (default: engine/graph/linear-weights.ts); benches compare. */
  accuracyLevel?: number;
  /** Tokens per KV block (`--kv-block-tokens`; default kv-cache/kv-layout.ts DEFAULT_KV_BLOCK_TOKENS). */
  kvBlockTokens?: number;
  /** `--kv-admission` (default on-demand). */
  kvAdmission?: KvAdmission;
  /** `--kv-watermark`: share of the KV budget kept free when admitting (default 0.01, as vLLM). */
  kvWatermark?: number;
  /** `--kv-placement host|device` (default: device on WebGPU, host otherwise; engine/kv-placement.ts). */
  kvPlacement?: KvCachePlacement;
  /** `--kv-dtype fp32|fp16`: fp16 halves the device KV cache (device placement only). */
  kvDtype?: KvDtype;
}

export const DEFAULT_MAX_QUEUE = 1024;

export function defaultKvCacheBytes(): number {
  return Math.floor(totalmem() / 4);
}

/**
 * The full model plus the named pruned variants, as the core serves them; a model that carries a
 * built-in plan (an exported plan) drops its sublayers in every one of them.
 */
export function variantDefinitions(
  modelName: string,
  variants: EngineOptions['variants'] = [],
  builtInPlan?: BuiltInPlan,
): VariantDefinition[] {
  return [
    { id: modelName, spec: withBuiltInPlan({ dropAttention: [], dropMlp: [] }, builtInPlan) },
    ...variants.map((v) => {
      const id = variantId(modelName, v.name);
      if (!v.adaptive) return { id, spec: withBuiltInPlan(v.spec, builtInPlan) };
      if (builtInPlan) {
        // Which sublayers a prompt may drop is chosen among all of them; an export has removed some.
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `variant ${v.name}: adaptive variants need the unpruned model, and ${modelName} is an export with a built-in plan`,
        );
      }
      return { id, spec: v.spec, adaptive: v.adaptive };
    }),
  ];
}

/**
 * EngineClient over an EngineCore in this thread. Model runs block this thread: the server uses
 * the worker-thread client (engine/worker/worker-engine.ts); tests, the CLI and tools use this one.
 */
export class InProcessEngine implements EngineClient {
  readonly model: ServedModelInfo;
  readonly tokenizer: Tokenizer;
  readonly core: EngineCore;

  constructor(core: EngineCore, model: ServedModelInfo, tokenizer: Tokenizer) {
    this.core = core;
    this.model = model;
    this.tokenizer = tokenizer;
  }

  async *generate(request: GenerateRequest, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    if (signal?.aborted) {
      yield abortedBeforeStart(request);
      return;
    }
    const queue = new EventQueue<GenerateEvent>();
    this.core.submit(request, (event) => {
      queue.push(event);
      if (event.type === 'finish') queue.close();
    });
    const onAbort = (): void => this.core.abort(request.requestId);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      yield* queue;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // A consumer that stops early (break, throw) must not leave the sequence running.
      if (!queue.isDone) this.core.abort(request.requestId);
    }
  }

  score(request: ScoreRequest): Promise<ScoreResult> {
    return this.core.score(request);
  }

  variants(): VariantInfo[] {
    return this.core.variants();
  }

  isReady(): boolean {
    return true;
  }

  close(graceMs = 0): Promise<void> {
    return this.core.close(graceMs);
  }
}

/** What transports are told about the served model; the same for in-process and worker engines. */
export function servedModelInfo(options: EngineOptions): ServedModelInfo {
  const { model } = options;
  return {
    name: options.servedModelName ?? model.source.id,
    source: model.source,
    config: model.config,
    createdAt: Math.floor(Date.now() / 1000),
    ...(model.builtInPlan ? { builtInPlan: model.builtInPlan } : {}),
  };
}

/** The KV-memory options the engine core takes as given (they cross the worker boundary as they are). */
export type KvMemoryOptions = Pick<
  EngineOptions,
  'kvBlockTokens' | 'kvAdmission' | 'kvWatermark' | 'kvPlacement' | 'kvDtype'
>;

/** Picks them out of the engine options (the worker's init message carries them as they are). */
export function kvMemoryOptions(options: KvMemoryOptions): KvMemoryOptions {
  return {
    kvBlockTokens: options.kvBlockTokens,
    kvAdmission: options.kvAdmission,
    kvWatermark: options.kvWatermark,
    kvPlacement: options.kvPlacement,
    kvDtype: options.kvDtype,
  };
}

/** The EngineCore of a model served under `name` through `runner`. */
export function engineCoreOptions(
  options: EngineOptions,
  name: string,
  runner: ForwardRunner,
): EngineCoreOptions {
  const { model } = options;
  return {
    config: model.config,
    runner,
    variants: variantDefinitions(name, options.variants, model.builtInPlan),
    kvCacheBytes: options.kvCacheBytes ?? defaultKvCacheBytes(),
    maxQueue: options.maxQueue ?? DEFAULT_MAX_QUEUE,
    prefixReuse: options.prefixReuse,
    weightBytes: weightByteTable(model.config, model.weights),
    kvBlockTokens: options.kvBlockTokens,
    kvAdmission: options.kvAdmission,
    kvWatermark: options.kvWatermark,
    kvDtype: options.kvDtype,
  };
}

export async function createEngine(options: EngineOptions): Promise<InProcessEngine> {
  const { model } = options;
  const info = servedModelInfo(options);
  const device = options.device ?? 'cpu';
  const variants = variantDefinitions(info.name, options.variants, model.builtInPlan);
  const budgetBytes = options.kvCacheBytes ?? defaultKvCacheBytes();
  const { runner, kvPool } = await createEngineRuntime({
    config: model.config,
    weights: model.weights,
    device,
    variants,
    kvPlacement: options.kvPlacement,
    kvDtype: options.kvDtype,
    budgetBytes,
    blockTokens: options.kvBlockTokens,
    session: {
      threads: options.threads ?? 1,
      weightFile: model.weightFile,
      accuracyLevel: options.accuracyLevel,
    },
  });
  const core = engineCoreOptions({ ...options, kvCacheBytes: budgetBytes }, info.name, runner);
  return new InProcessEngine(new EngineCore({ ...core, kvPool }), info, model.tokenizer);
}
