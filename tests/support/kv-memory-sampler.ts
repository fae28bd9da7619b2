import type { EngineCore } from '../../engine/runtime/engine-core.ts';

/** One step on which the engine held more KV bytes than its budget allows. */
export interface OverBudgetStep {
  step: number;
  allocatedBytes: number;
  budgetBytes: number;
}

/**
 * Reads an engine core's KV memory and running sequences after every model run (EngineCore's
 * onStepEnd), so a test can say "never over budget" about every step instead of the moments it
 * happened to poll, and can read the most sequences that ran at once.
 */
export class KvMemorySampler {
  steps = 0;
  maxAllocatedBytes = 0;
  maxUsedBytes = 0;
  /** Most sequences running at once, all variants together. */
  maxRunning = 0;
  readonly maxRunningByVariant = new Map<string, number>();
  readonly overBudget: OverBudgetStep[] = [];
  /** Steps whose used bytes (live blocks) exceeded the allocated bytes: an accounting bug. */
  readonly usedAboveAllocated: number[] = [];
  readonly #core: EngineCore;

  constructor(core: EngineCore) {
    this.#core = core;
    const previous = core.onStepEnd;
    core.onStepEnd = () => {
      previous?.();
      this.sample();
    };
  }

  /** Also callable between steps (e.g. once everything has finished). */
  sample(): void {
    const step = this.steps++;
    const { budgetBytes, allocatedBytes, usedBytes } = this.#core.kvMemory();
    this.maxAllocatedBytes = Math.max(this.maxAllocatedBytes, allocatedBytes);
    this.maxUsedBytes = Math.max(this.maxUsedBytes, usedBytes);
    if (allocatedBytes > budgetBytes) this.overBudget.push({ step, allocatedBytes, budgetBytes });
    if (usedBytes > allocatedBytes) this.usedAboveAllocated.push(step);
    let running = 0;
    for (const v of this.#core.variants()) {
      running += v.requestsRunning;
      this.maxRunningByVariant.set(
        v.id,
        Math.max(this.maxRunningByVariant.get(v.id) ?? 0, v.requestsRunning),
      );
    }
    this.maxRunning = Math.max(this.maxRunning, running);
  }
}

/** Sequences the core holds (running or waiting, preempted ones included), all variants together. */
export function sequencesInEngine(core: EngineCore): number {
  return core.variants().reduce((sum, v) => sum + v.requestsRunning + v.requestsWaiting, 0);
}
