/**
 * Where start-up time goes, phase by phase (the `--log-level debug` breakdown): reading the model
 * files, starting the engine worker, building and encoding the graph, creating the ORT session.
 */
export interface StartupPhase {
  phase: string;
  ms: number;
}

/** Times consecutive phases: each lap closes the phase that ran since the previous lap. */
export class PhaseClock {
  readonly phases: StartupPhase[] = [];
  #last: number;

  /** startMs 0 = process start (performance.now()'s origin); default now. */
  constructor(startMs = performance.now()) {
    this.#last = startMs;
  }

  lap(phase: string): void {
    const now = performance.now();
    this.phases.push({ phase, ms: Math.round((now - this.#last) * 10) / 10 });
    this.#last = now;
  }
}

/** Milliseconds since the Unix epoch with sub-ms precision, comparable across worker threads. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** One line for a log message: "read weights 325 ms, session create 1681 ms, …". */
export function formatPhases(phases: readonly StartupPhase[]): string {
  return phases.map((p) => `${p.phase} ${Math.round(p.ms)} ms`).join(', ');
}
