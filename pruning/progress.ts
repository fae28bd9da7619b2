/**
 * Progress bars for long prune commands: cli-progress on stderr, shown only when stderr is a
 * terminal (so piped output and tests stay clean). One bar at a time; a new phase replaces the old.
 */
import cliProgress from 'cli-progress';

export interface Progress {
  /** Starts (or restarts) a bar for a named phase. */
  phase(label: string, total: number): void;
  update(done: number, total?: number): void;
  stop(): void;
}

export function createProgress(isEnabled: boolean = process.stderr.isTTY === true): Progress {
  if (!isEnabled) return { phase() {}, update() {}, stop() {} };
  let bar: cliProgress.SingleBar | null = null;
  return {
    phase(label, total) {
      bar?.stop();
      bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${label.padEnd(24)} [{bar}] {value}/{total} | {duration_formatted} (eta {eta_formatted})`,
          hideCursor: true,
          etaBuffer: 20,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0);
    },
    update(done, total) {
      if (total !== undefined) bar?.setTotal(total);
      bar?.update(done);
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}
