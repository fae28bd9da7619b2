import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, vi } from 'vitest';
import type { FakeUpstream } from './fake-upstream.ts';

/** Per-test state of a `dropserve loadtest` CLI suite; fresh for every test. */
export interface CliHarness {
  /** An empty temporary folder for the test's output files, removed after it. */
  dir: string;
  /** What the command printed with console.log, one entry per call (console.error is silenced). */
  printed: string[];
  /** The scripted upstream the test started, if any; closed after it. */
  upstream: FakeUpstream | undefined;
}

/** Registers the hooks of a CLI suite: a temp folder, captured console, upstream cleanup. */
export function useCliHarness(tempPrefix: string): CliHarness {
  const harness: CliHarness = { dir: '', printed: [], upstream: undefined };
  beforeEach(async () => {
    harness.dir = await mkdtemp(join(tmpdir(), tempPrefix));
    harness.printed = [];
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
      harness.printed.push(args.join(' '));
    });
    vi.spyOn(console, 'error').mockImplementation(() => {});
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await harness.upstream?.close();
    harness.upstream = undefined;
    await rm(harness.dir, { recursive: true, force: true });
  });
  return harness;
}
