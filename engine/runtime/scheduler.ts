import { kvShapeBytes } from '../../kv-cache/kv-layout.ts';
import type { KvAdmission } from '../client.ts';

/**
 * The scheduler: admission, preemption and the plan of one round, as a pure function of the
 * engine's state. It never touches buffers or the model; the engine applies its plan (the executor
 * runs the model, the updater samples). Memory is planned with kvShapeBytes — rows × the longest
 * row rounded up to blocks × bytes/token per batch group — which is what the pool allocates.
 */

export type Priority = 'interactive' | 'background';

/** One batch group: the sequences that share an arena (a variant's decodes, or its scores). */
export interface GroupState {
  id: string;
  bytesPerToken: number;
}

/** A job holding KV: a generation decoding, or a score advancing chunk by chunk. */
export interface RunningJob {
  id: string;
  kind: 'generate' | 'score';
  group: string;
  priority: Priority;
  /** Order of the latest admission: larger = admitted more recently. */
  admittedAt: number;
  /** Tokens in its KV row now. */
  cachedTokens: number;
  /** Tokens it would append if it advances this round (1 for a decode, a chunk for a score). */
  stepTokens: number;
  /** Prompt + max_tokens (generation) or the scored length: what worst-case admission reserves. */
  worstCaseTokens: number;
}

/** A job waiting for admission, in queue order (interactive before background, FIFO within). */
export interface WaitingJob {
  id: string;
  kind: 'generate' | 'score';
  group: string;
  priority: Priority;
  /**
   * Tokens its row holds once admitted and advanced this round: a generation's prompt (plus the
   * tokens it generated before a preemption) and its first decode; a score's first chunk.
   */
  admitTokens: number;
  /** Tokens the admission computes (counts against the round's prefill budget). */
  computeTokens: number;
  worstCaseTokens: number;
}

export type AdmissionPolicy = KvAdmission;

export interface SchedulerConfig {
  budgetBytes: number;
  blockTokens: number;
  /** Bytes kept free when admitting, so that running sequences can grow before anyone is preempted. */
  watermarkBytes: number;
  /** on-demand: admit on the blocks in use; worst-case: also require Σ worst cases ≤ budget. */
  admission: AdmissionPolicy;
  /** Tokens admissions may compute per round (at least one admission always runs). */
  maxPrefillTokensPerRound: number;
}

export interface SchedulerState {
  groups: readonly GroupState[];
  running: readonly RunningJob[];
  waiting: readonly WaitingJob[];
  /** Whether background jobs may run this round (the engine's time share for shadow work). */
  backgroundAllowed: boolean;
}

export interface RoundPlan {
  /** Running jobs to evict (KV freed, back to the front of the queue), in eviction order. */
  preempt: string[];
  /** Waiting jobs admitted this round, in order; each gets its prefill (or first chunk). */
  admit: string[];
  /** Generation groups that run one decode step, each with the jobs it batches (admitted included). */
  decode: { group: string; jobs: string[] }[];
  /** Running score jobs that advance one chunk. */
  scoreChunks: string[];
}

interface Occupant {
  id: string;
  group: string;
  /** Tokens in the row once this round's runs are done. */
  finalTokens: number;
  worstCaseTokens: number;
}

/** Bytes the arenas need for a set of occupants: per group, rows × longest row (block-aligned). */
export function plannedBytes(
  occupants: Iterable<Occupant>,
  groups: ReadonlyMap<string, GroupState>,
  blockTokens: number,
): number {
  const shape = new Map<string, { rows: number; longest: number }>();
  for (const o of occupants) {
    const s = shape.get(o.group) ?? { rows: 0, longest: 0 };
    s.rows++;
    s.longest = Math.max(s.longest, o.finalTokens);
    shape.set(o.group, s);
  }
  let bytes = 0;
  for (const [group, s] of shape) {
    bytes += kvShapeBytes(groupOf(groups, group).bytesPerToken, s.rows, s.longest, blockTokens);
  }
  return bytes;
}

function groupOf(groups: ReadonlyMap<string, GroupState>, id: string): GroupState {
  const group = groups.get(id);
  if (!group) throw new Error(`scheduler: unknown batch group ${id}`);
  return group;
}

const reservedBytes = (occupants: Iterable<Occupant>, groups: ReadonlyMap<string, GroupState>): number => {
  let bytes = 0;
  for (const o of occupants) bytes += o.worstCaseTokens * groupOf(groups, o.group).bytesPerToken;
  return bytes;
};

/** Background before interactive; within a priority, the most recently admitted first. */
function evictionOrder(a: RunningJob, b: RunningJob): number {
  if (a.priority !== b.priority) return a.priority === 'background' ? -1 : 1;
  return b.admittedAt - a.admittedAt;
}

/**
 * Plans one round:
 * 1. Every running generation decodes one token, every running score advances a chunk (background
 *    ones only when allowed). If the arenas cannot grow that far, running jobs are preempted in
 *    eviction order until they can.
 * 2. Waiting jobs are admitted first come, first served while the round's prefill budget lasts and
 *    the plan plus the watermark fits; an interactive job that does not fit preempts background
 *    jobs, and one that still does not fit stops admission (no overtaking, so a long prompt is not
 *    starved by short ones). A job preempted this round is not readmitted.
 */
export function planRound(state: SchedulerState, config: SchedulerConfig): RoundPlan {
  const groups = new Map(state.groups.map((g) => [g.id, g]));
  const advances = (job: RunningJob): boolean =>
    job.kind === 'generate' || job.priority === 'interactive' || state.backgroundAllowed;
  const occupants = new Map<string, Occupant>();
  for (const job of state.running) {
    occupants.set(job.id, {
      id: job.id,
      group: job.group,
      finalTokens: job.cachedTokens + (advances(job) ? job.stepTokens : 0),
      worstCaseTokens: job.worstCaseTokens,
    });
  }
  const fits = (extraBytes: number): boolean => {
    if (plannedBytes(occupants.values(), groups, config.blockTokens) + extraBytes > config.budgetBytes) {
      return false;
    }
    return (
      config.admission === 'on-demand' ||
      reservedBytes(occupants.values(), groups) + extraBytes <= config.budgetBytes
    );
  };

  const preempt: string[] = [];
  // Sorted only when someone has to go: most rounds preempt nothing.
  let sortedVictims: RunningJob[] | null = null;
  const victimsInOrder = (): RunningJob[] => {
    sortedVictims ??= [...state.running].sort(evictionOrder);
    return sortedVictims;
  };
  // Only physical memory forces a preemption: worst-case reservations were checked at admission.
  while (plannedBytes(occupants.values(), groups, config.blockTokens) > config.budgetBytes) {
    const victims = victimsInOrder();
    const victim = victims.shift();
    if (!victim) break;
    occupants.delete(victim.id);
    preempt.push(victim.id);
  }

  const admit: string[] = [];
  let prefillTokens = 0;
  for (const job of state.waiting) {
    if (job.priority === 'background' && !state.backgroundAllowed) break;
    if (admit.length > 0 && prefillTokens >= config.maxPrefillTokensPerRound) break;
    occupants.set(job.id, {
      id: job.id,
      group: job.group,
      finalTokens: job.admitTokens,
      worstCaseTokens: job.worstCaseTokens,
    });
    // The watermark leaves room for running rows to grow; worst-case admission reserved that room
    // already, and with nothing else holding KV a job that fits the budget alone runs.
    const watermark = (): number =>
      config.admission === 'on-demand' && occupants.size > 1 ? config.watermarkBytes : 0;
    // Background jobs hold KV only while nothing interactive needs it.
    while (job.priority === 'interactive' && !fits(watermark())) {
      const victims = victimsInOrder();
      const victim = victims.find((v) => v.priority === 'background' && occupants.has(v.id));
      if (!victim) break;
      victims.splice(victims.indexOf(victim), 1);
      occupants.delete(victim.id);
      preempt.push(victim.id);
    }
    if (!fits(watermark())) {
      occupants.delete(job.id);
      break;
    }
    admit.push(job.id);
    prefillTokens += job.computeTokens;
  }

  const preempted = new Set(preempt);
  const admitted = new Set(admit);
  const decoding = [
    ...state.running.filter((job) => job.kind === 'generate' && !preempted.has(job.id)),
    ...state.waiting.filter((job) => job.kind === 'generate' && admitted.has(job.id)),
  ];
  const scoreChunks = state.running
    .filter((job) => job.kind === 'score' && !preempted.has(job.id) && advances(job))
    .map((job) => job.id);
  const decode = decodeBatches(
    state.groups.map((g) => g.id),
    decoding,
  );
  return { preempt, admit, decode, scoreChunks };
}

/**
 * One decode batch per group, its jobs in the order given; groups in `groupOrder` (the engine's order
 * of variants), so every variant gets a step every round.
 */
export function decodeBatches(
  groupOrder: readonly string[],
  jobs: Iterable<{ id: string; group: string }>,
): RoundPlan['decode'] {
  const byGroup = new Map<string, string[]>();
  for (const job of jobs) {
    const ids = byGroup.get(job.group);
    if (ids) ids.push(job.id);
    else byGroup.set(job.group, [job.id]);
  }
  return groupOrder.flatMap((group) => {
    const ids = byGroup.get(group);
    return ids ? [{ group, jobs: ids }] : [];
  });
}
