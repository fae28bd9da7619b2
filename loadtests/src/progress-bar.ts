import cliProgress from 'cli-progress';
import type { LoadtestProgress } from './loadtest.ts';

/**
 * A progress bar on stderr for `dropserve loadtest`: requests done out of planned (or seconds out of
 * --duration when the run is bounded by time). Disabled when stderr is not a terminal or --quiet.
 */
export interface LoadtestProgressBar {
  onProgress(progress: LoadtestProgress): void;
  stop(): void;
}

export function createLoadtestProgressBar(isEnabled: boolean, durationS: number | null): LoadtestProgressBar {
  if (!isEnabled) return { onProgress() {}, stop() {} };
  let bar: cliProgress.SingleBar | null = null;
  let phase: LoadtestProgress['phase'] | null = null;
  return {
    onProgress(p) {
      const byTime = p.total === null;
      const total = byTime ? Math.max(1, Math.round(durationS ?? 1)) : p.total!;
      const value = byTime ? Math.min(total, Math.floor(p.elapsedMs / 1000)) : p.completed + p.failed;
      if (phase !== p.phase) {
        bar?.stop();
        phase = p.phase;
        bar = new cliProgress.SingleBar(
          {
            stream: process.stderr,
            format: `${p.phase.padEnd(8)} [{bar}] {value}/{total}${byTime ? ' s' : ''} | ok {ok} failed {failed} | {duration_formatted}`,
            hideCursor: true,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, 0, { ok: 0, failed: 0 });
      }
      bar?.update(value, { ok: p.completed, failed: p.failed });
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}
