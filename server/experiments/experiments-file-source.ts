import { type FSWatcher, watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { Counter, type Registry } from 'prom-client';
import { DropserveError } from '../../engine/errors.ts';
import type { Logger } from '../logger.ts';
import type { Experiment, ExperimentRouter } from './experiment-router.ts';
import {
  type ExperimentsFileContent,
  experimentsFileVersion,
  parseExperimentsFile,
} from './experiments-file.ts';
import { guardrailText } from './guardrails.ts';

/** What GET /v1/experiments shows about the file (snake_case like the rest of the API). */
export interface ExperimentsFileStatus {
  path: string;
  /** Version (content hash) of the configuration in force; replicas with the same one route alike. */
  version: string;
  loaded_at: string;
  experiments: string[];
  /** Guardrails per experiment, in the --experiment-guardrail syntax. */
  guardrails: Record<string, string[]>;
  /** The last edit that was rejected (the configuration in force stayed); null once one loads. */
  last_error: { message: string; version: string | null; at: string } | null;
  reloads: { ok: number; rejected: number };
}

export interface ExperimentsFileSourceOptions {
  path: string;
  router: ExperimentRouter;
  logger: Logger;
  /** Where dropserve:experiments_file_reloads_total{result} is registered. */
  registry?: Registry;
  /** How often the file is re-read in case no watch event came (network volumes). Default 2000 ms. */
  pollIntervalMs?: number;
}

/**
 * Keeps the router's file-scoped experiments equal to the file. The file is watched, and so is its
 * directory: a ConfigMap volume updates by swapping a `..data` symlink, which a watch on the old
 * file never sees. A periodic re-read catches what watches miss; a content hash makes it cheap to
 * ignore. An edit applies whole or not at all: a file that does not parse, names an unknown
 * variant, or takes a name a --experiment / admin API experiment holds is rejected with a log
 * line, and the configuration in force stays.
 */
export class ExperimentsFileSource {
  readonly path: string;
  readonly #router: ExperimentRouter;
  readonly #logger: Logger;
  readonly #pollIntervalMs: number;
  readonly #reloads: Counter<'result'> | undefined;
  readonly #counts = { ok: 0, rejected: 0 };
  #content: ExperimentsFileContent | undefined;
  #loadedAt = '';
  #lastError: ExperimentsFileStatus['last_error'] = null;
  /** Hash of the last text read, applied or not: the same bytes are not judged twice. */
  #lastSeen: string | undefined;
  #watchers: FSWatcher[] = [];
  #poll: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #checking: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(options: ExperimentsFileSourceOptions) {
    this.path = resolve(options.path);
    this.#router = options.router;
    this.#logger = options.logger;
    this.#pollIntervalMs = options.pollIntervalMs ?? 2000;
    if (options.registry) {
      this.#reloads = new Counter({
        name: 'dropserve:experiments_file_reloads_total',
        help: 'Changes of --experiments-file seen after start: applied (ok) or rejected, the old configuration kept.',
        labelNames: ['result'],
        registers: [options.registry],
      });
      this.#reloads.inc({ result: 'ok' }, 0);
      this.#reloads.inc({ result: 'rejected' }, 0);
    }
  }

  /** The first load: a bad file at start-up is an error (nothing sensible to keep), not a log line. */
  async load(): Promise<void> {
    let text: string;
    try {
      text = await this.#read();
    } catch (error) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--experiments-file ${this.path}: cannot read: ${(error as Error).message}`,
      );
    }
    this.#lastSeen = experimentsFileVersion(text);
    this.#apply(parseExperimentsFile(text, this.path));
  }

  /** Starts watching; call after load(). */
  start(): void {
    this.#armWatchers();
    this.#poll = setInterval(() => this.#schedule(0), this.#pollIntervalMs).unref();
  }

  /** Re-reads the file now (the watchers and the poll call this too); resolves once judged. */
  check(): Promise<void> {
    this.#checking = this.#checking.then(() => this.#checkOnce());
    return this.#checking;
  }

  status(): ExperimentsFileStatus {
    const content = this.#content!;
    return {
      path: this.path,
      version: content.version,
      loaded_at: this.#loadedAt,
      experiments: content.experiments.map((e) => e.name),
      guardrails: Object.fromEntries(
        content.experiments.map((e) => [e.name, e.guardrails.map(guardrailText)]),
      ),
      last_error: this.#lastError,
      reloads: { ...this.#counts },
    };
  }

  close(): void {
    this.#closed = true;
    clearInterval(this.#poll);
    clearTimeout(this.#debounce);
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }

  async #checkOnce(): Promise<void> {
    if (this.#closed) return;
    let text: string;
    try {
      text = await this.#read();
    } catch (error) {
      // Mid-swap or deleted: nothing to judge yet; the configuration in force stays.
      this.#logger.warn(
        { path: this.path, err: (error as Error).message },
        'experiments file unreadable; keeping the configuration in force',
      );
      return;
    }
    const version = experimentsFileVersion(text);
    if (version === this.#lastSeen) return;
    this.#lastSeen = version;
    this.#armWatchers(); // a swapped file is a new inode: watch the new one
    try {
      const content = parseExperimentsFile(text, this.path);
      const before = this.#content?.version;
      this.#apply(content);
      this.#counts.ok++;
      this.#reloads?.inc({ result: 'ok' });
      this.#logger.info(
        {
          path: this.path,
          version,
          previousVersion: before,
          experiments: content.experiments.map((e) => e.name),
        },
        `experiments file reloaded: version ${version}`,
      );
    } catch (error) {
      const message = (error as Error).message;
      this.#lastError = { message, version, at: new Date().toISOString() };
      this.#counts.rejected++;
      this.#reloads?.inc({ result: 'rejected' });
      this.#logger.error(
        { path: this.path, version, keptVersion: this.#content?.version, err: message },
        `experiments file edit rejected, keeping version ${this.#content?.version}: ${message}`,
      );
    }
  }

  /** Applies every experiment or none: a failure restores what the file had set before. */
  #apply(content: ExperimentsFileContent): void {
    const router = this.#router;
    for (const e of content.experiments) {
      if (router.get(e.name)?.scope === 'replica') {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `${this.path}: experiment "${e.name}" is already defined by --experiment or the admin API on this replica`,
        );
      }
    }
    const previous = new Map<string, Experiment>();
    for (const e of this.#content?.experiments ?? []) {
      const current = router.get(e.name);
      if (current) previous.set(e.name, current);
    }
    const touched: string[] = [];
    try {
      for (const e of content.experiments) {
        touched.push(e.name);
        router.set(e.name, e.arms, { control: e.control, scope: 'file', guardrails: e.guardrails });
      }
    } catch (error) {
      for (const name of touched) {
        const old = previous.get(name);
        if (old)
          router.set(name, old.arms, { control: old.control, scope: 'file', guardrails: old.guardrails });
        else router.delete(name);
      }
      throw new DropserveError('DS_INVALID_ARGUMENT', `${this.path}: ${(error as Error).message}`);
    }
    const kept = new Set(content.experiments.map((e) => e.name));
    for (const name of previous.keys()) if (!kept.has(name)) router.delete(name);
    this.#content = content;
    this.#loadedAt = new Date().toISOString();
    this.#lastError = null;
  }

  #read(): Promise<string> {
    return readFile(this.path, 'utf8');
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    clearTimeout(this.#debounce);
    // Editors and ConfigMap swaps fire several events per change: judge once they settle.
    this.#debounce = setTimeout(() => void this.check(), delayMs).unref();
  }

  #armWatchers(): void {
    if (this.#closed) return;
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
    const name = basename(this.path);
    const onEvent = (_event: string, file: string | Buffer | null): void => {
      // In the directory, only our file or the ConfigMap's ..data swap matters.
      if (file === null || String(file) === name || String(file).startsWith('..')) this.#schedule(50);
    };
    for (const target of [this.path, dirname(this.path)]) {
      try {
        const watcher = watch(
          target,
          { persistent: false },
          target === this.path ? () => this.#schedule(50) : onEvent,
        );
        watcher.on('error', () => watcher.close()); // the file went away; the directory watch and poll remain
        this.#watchers.push(watcher);
      } catch {
        // Some filesystems cannot be watched: the poll still sees changes.
      }
    }
  }
}
