import type { KvArena } from '../../kv-cache/kv-pool.ts';
import type { GenerateEvent, GenerateRequest, RequestTimings, ScoreRequest, ScoreResult } from '../client.ts';
import type { SublayerMask } from '../graph/io.ts';
import type { AdaptiveSpec } from '../plan/adaptive-mask.ts';
import type { DropSpec } from '../plan/plan.ts';
import type { SamplerState } from '../sampling/sampler.ts';
import type { Priority } from './scheduler.ts';
import type { ResolvedVariant } from './variant.ts';

export type EventSink = (event: GenerateEvent) => void;

/** A served variant and the two arenas its jobs hold KV in. */
export interface VariantState {
  def: ResolvedVariant;
  /** Rows of its running generations: one decode batch. */
  decodeArena: KvArena;
  /** Rows of its scores, fed chunk by chunk (B = 1), never part of a decode batch. */
  scoreArena: KvArena;
  /** Generations not yet admitted (or preempted and waiting to be recomputed). */
  waiting: number;
  running: number;
  /** Prompt tokens whose KV was copied from a donor instead of computed. */
  prefixReusedTokens: number;
  /** Times one of its jobs was preempted. */
  preemptions: number;
  /** Input-adaptive variants: what each prompt drops, and the batch group of every drop set chosen so far. */
  adaptive: AdaptiveSpec | null;
  maskGroups: Map<string, MaskGroup>;
  /** Decode steps run and the bytes they moved between host and device (all 0 on the CPU EP). */
  decodeTransfer: { decodeSteps: number; hostToDeviceBytes: number; deviceToHostBytes: number };
}

/** The sequences of an adaptive variant that chose the same drops: one decode batch, one arena. */
export interface MaskGroup {
  drops: DropSpec;
  mask: SublayerMask;
  arena: KvArena;
}

interface JobBase {
  id: string;
  variant: VariantState;
  priority: Priority;
  state: 'waiting' | 'running' | 'finished';
  /** Scheduler's order of the latest admission (0 until admitted). */
  admittedAt: number;
  isAborted: boolean;
}

export interface GenerationJob extends JobBase {
  kind: 'generate';
  request: GenerateRequest;
  sink: EventSink;
  sampler: SamplerState;
  stopIds: Set<number>;
  /** Prompt + max_tokens: what worst-case admission reserves. */
  worstCaseTokens: number;
  /** Tokens sent to the client so far; all but the last are in the KV row once it has been decoded. */
  output: number[];
  timings: RequestTimings;
  /** Times it was preempted (its KV freed and recomputed later). */
  preemptions: number;
  /** An adaptive variant's sequence: the drops its prompt chose (set by its first prefill). */
  maskGroup: MaskGroup | null;
}

export interface ScoreJob extends JobBase {
  kind: 'score';
  request: ScoreRequest;
  resolve: (result: ScoreResult) => void;
  reject: (error: unknown) => void;
  /** Next position to feed; positions 0..n-2 are fed (the last token is only predicted). */
  nextToken: number;
  /** Positions fed per run. */
  chunkTokens: number;
  result: ScoreResult;
}

export type Job = GenerationJob | ScoreJob;

/** Tokens a generation's KV row must hold before its next decode: prompt + all output but the last. */
export function tokensToRecompute(job: GenerationJob): number[] {
  return [...job.request.promptTokenIds, ...job.output.slice(0, -1)];
}

export const emptyScoreResult = (request: ScoreRequest): ScoreResult => ({
  tokenLogprobs: [],
  argmaxIds: [],
  argmaxLogprobs: [],
  ...(request.returnDistributions ? { distributions: [] } : {}),
});
