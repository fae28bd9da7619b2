/**
 * SIGINT for long prune commands: the first Ctrl-C aborts the work at the next model run (between
 * runs; a run itself cannot be interrupted) so temporary files are cleaned up and nothing partial is
 * written; a second Ctrl-C falls through to Node's default and ends the process at once.
 */
export async function withInterrupt<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSigint = (): void => {
    process.stderr.write('\ninterrupted: stopping after the current model run (Ctrl-C again to exit now)\n');
    controller.abort();
  };
  process.once('SIGINT', onSigint);
  try {
    return await work(controller.signal);
  } finally {
    process.off('SIGINT', onSigint);
  }
}
