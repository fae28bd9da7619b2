/**
 * Writes a set of files so that an interrupt leaves either all of them or none: every file goes to a
 * temporary sibling first, then all are renamed into place. Renames are synchronous, so a SIGINT
 * handler (which runs on the event loop) cannot fire between them.
 */
import { renameSync, rmSync, writeFileSync } from 'node:fs';

export interface FileToWrite {
  path: string;
  content: string;
}

export function writeFilesAtomically(files: readonly FileToWrite[]): void {
  const temps = files.map((f) => `${f.path}.tmp-${process.pid}`);
  try {
    files.forEach((f, i) => {
      writeFileSync(temps[i]!, f.content);
    });
    files.forEach((f, i) => {
      renameSync(temps[i]!, f.path);
    });
  } finally {
    for (const t of temps) rmSync(t, { force: true });
  }
}
