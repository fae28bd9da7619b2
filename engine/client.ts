import type { SerializedError } from './errors.ts';
import type { ModelConfig } from './model/config.ts';
import type { BuiltInPlan, ModelSource } from './model/loaded-model.ts';
import type { DropSpec } from './plan/plan.ts';
import type { Tokenizer } from './tokenizer/tokenizer.ts';

/**
 * The one interface transports (HTTP, gRPC) and tools (load tests, shadow scoring) use to reach the
 * engine. Implemented in-process (engine/engine.ts, for tests and tools) and across a worker thread
 * (engine/worker/worker-client.ts, for the server: session.run blocks its thread).
 */
export interface EngineClient {
  /**
   * Token-level generation. Cancelling the signal frees the sequence's KV slot within one step; a
   * signal already cancelled ends the request at once with a finish event of reason "abort".
   */
  generate(request: GenerateRequest, signal?: AbortSignal): AsyncIterable<GenerateEvent>;
  /** Teacher-forced pass: log-probabilities of every position (live fidelity, eval). */
  score(request: ScoreRequest, signal?: AbortSignal): Promise<ScoreResult>;
  /** Variants served, with live counters. */
  variants(): VariantInfo[];
  /** Model facts the transports need (tokenizer lives on the caller's thread). */
  readonly model: ServedModelInfo;
  readonly tokenizer: Tokenizer;
  isReady(): boolean;
  /** Stops admitting; cancels whatever is still running after graceMs; releases the worker. */
  close(graceMs?: number): Promise<void>;
}

export interface ServedModelInfo {
  /** Served name of the full model (--served-model-name or the source id). */
  name: string;
  source: ModelSource;
  config: ModelConfig;
  /** Unix seconds the model was loaded (OpenAI's `created`). */
  createdAt: number;
  /** The plan a loaded export carries (engine/model/loaded-model.ts), shown in /v1/models. */
  builtInPlan?: BuiltInPlan;
}

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  topP: number; // 1 = off
  topK: number; // 0 or -1 = off
  minP: number; // 0 = off
  /** Seeded runs are reproducible; absent = random seed. */
  seed?: number;
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number; // 1 = off
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
};

export interface GenerateRequest {
  requestId: string;
  /** Variant name as served, e.g. "stories260K" or "stories260K:attn-2". */
  variant: string;
  promptTokenIds: number[];
  maxTokens: number;
  sampling: SamplingParams;
  /** Ids that end the sequence in addition to the model's EOS ids. */
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  /** Return this many top alternatives with each token (0 = only the chosen token's logprob). */
  topLogprobs?: number;
  /** Also return the chosen token's logprob. */
  logprobs?: boolean;
  /** Record the full next-token distribution per generated position (shadow scoring). */
  recordDistributions?: boolean;
  /** Background work (shadow scoring) never delays interactive work. */
  priority?: 'interactive' | 'background';
  /** For metrics: which transport the request came through. */
  transport?: 'http' | 'grpc' | 'internal';
}

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

export type GenerateEvent = TokenEvent | FinishEvent;

export interface TokenEvent {
  type: 'token';
  tokenId: number;
  /** Index of this token among the completion's tokens. */
  index: number;
  logprob?: number;
  topLogprobs?: { tokenId: number; logprob: number }[];
  /** Log-softmax over the whole vocabulary at this position (only with recordDistributions). */
  distribution?: Float32Array;
  /** Epoch milliseconds (performance.timeOrigin-based) when the token was sampled. */
  timeMs: number;
}

export interface FinishEvent {
  type: 'finish';
  reason: FinishReason;
  /** The token id that stopped generation (EOS or a stop id), not part of the output. */
  stopTokenId?: number;
  usage: Usage;
  timings: RequestTimings;
  variant: string;
  /** Set when reason is "error": what failed (the sequence's partial output stays valid). */
  error?: SerializedError;
  /** An adaptive variant's choice for this prompt: the sublayers it decoded without. */
  adaptiveDrops?: { attention: number[]; mlp: number[] };
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** Epoch milliseconds; absent when the request never reached that stage. */
export interface RequestTimings {
  arrivalMs: number;
  /** Left the waiting queue (admitted with a KV reservation). */
  scheduledMs?: number;
  /** Prefill finished. */
  prefillEndMs?: number;
  firstTokenMs?: number;
  lastTokenMs?: number;
  finishedMs: number;
}

export interface ScoreRequest {
  requestId: string;
  variant: string;
  tokenIds: number[];
  /** Score positions from this index on (positions < fromIndex are context only). */
  fromIndex: number;
  priority?: 'interactive' | 'background';
  /** Return full log-softmax rows for scored positions (KL needs them). */
  returnDistributions?: boolean;
}

export interface ScoreResult {
  /** For each position p ≥ fromIndex (predicting tokenIds[p] from the prefix before it). */
  tokenLogprobs: number[];
  /** Argmax token id at each scored position. */
  argmaxIds: number[];
  argmaxLogprobs: number[];
  distributions?: Float32Array[];
}

export type KvCachePlacement = 'host' | 'device';

/**
 * on-demand: a sequence is admitted when its prompt's KV blocks fit and takes blocks as it grows,
 * preempting when memory runs out (vLLM's way); worst-case: admitted only when prompt + max_tokens
 * fits, reserved until it ends (the behaviour before on-demand KV, kept for comparisons).
 */
export type KvAdmission = 'on-demand' | 'worst-case';

export const KV_ADMISSIONS: readonly KvAdmission[] = ['on-demand', 'worst-case'];

export interface VariantInfo {
  /** Served name: "<model>" for the full model, "<model>:<NAME>" for the others. */
  id: string;
  base: string;
  spec: DropSpec;
  kvBytesPerToken: number;
  /** Weight bytes one decoded token reads in this variant (kept sublayers, lm_head, one embedding row). */
  weightBytesPerToken?: number;
  /** How the linear layers are stored (`--weights`). */
  weightFormat?: 'fp32' | 'fp16' | 'int8' | 'int4';
  /** 0..1: kvCacheBytesUsed / kvCacheBudgetBytes. */
  kvCacheUsagePerc: number;
  /** Bytes of the KV blocks this variant's live tokens occupy (whole blocks of kvBlockTokens). */
  kvCacheBytesUsed: number;
  /** Bytes of the K/V buffers this variant's arenas hold now (≥ used: padding to the longest row, spare rows). */
  kvCacheBytesAllocated: number;
  /** The budget all variants share (`--kv-cache-bytes`). */
  kvCacheBudgetBytes: number;
  /** Tokens per KV block: the unit arenas grow in (`--kv-block-tokens`). */
  kvBlockTokens: number;
  /** Where the K/V buffers live. */
  kvCachePlacement: KvCachePlacement;
  /** How sequences are admitted (`--kv-admission`). */
  kvAdmission: KvAdmission;
  /** Sequences of this variant preempted (KV freed, recomputed later) since start; cumulative. */
  numPreemptions: number;
  requestsRunning: number;
  requestsWaiting: number;
  /** Prompt tokens whose KV was copied from a running sequence's shared prefix (with prefix reuse on). */
  prefixReusedTokens?: number;
  /**
   * An input-adaptive variant (`adaptive:attn:K,mlp:M`): how many sublayers each prompt drops, and
   * how many distinct drop sets its prompts have produced so far (sequences with one set batch together).
   */
  adaptive?: { attention: number; mlp: number; distinctMasks: number };
  /**
   * Decode steps of this variant and the bytes they moved between JS memory and the device (model
   * runs and KV updates; all 0 on the CPU EP): with KV on the device, per step is ids, positions and
   * the sampled logits, whatever the context length.
   */
  deviceTransfer?: { decodeSteps: number; hostToDeviceBytes: number; deviceToHostBytes: number };
}

/** Prompt tokens reused across all variants (0 when prefix reuse is off). */
export function totalPrefixReusedTokens(variants: readonly VariantInfo[]): number {
  return variants.reduce((sum, v) => sum + (v.prefixReusedTokens ?? 0), 0);
}
