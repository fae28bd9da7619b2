import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkCompiledBuild } from '../bin/compiled-build.js';
import { freePort } from './support/test-server.ts';

/**
 * The build (scripts/build.mjs) into a scratch dir, never the checkout's dist/: the compiled CLI must
 * behave as the sources do, start the compiled worker, and still find its run-time files (proto
 * files, dashboard assets, the shipped model) in the source tree.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const STORIES = path.join(ROOT, 'models/stories260K/stories260K.bin');
let outdir: string;

beforeAll(() => {
  // Inside the checkout (under node_modules/.cache, ignored) so the bundles resolve their packages.
  const cache = path.join(ROOT, 'node_modules/.cache');
  fs.mkdirSync(cache, { recursive: true });
  outdir = path.join(fs.mkdtempSync(path.join(cache, 'dropserve-build-')), 'dist');
  execFileSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs'), '--outdir', outdir], {
    stdio: 'pipe',
  });
});

afterAll(() => {
  if (outdir) fs.rmSync(path.dirname(outdir), { recursive: true, force: true });
});

/** `generate --json` (greedy) on stories260K: the completion's token ids and text. */
function generate(entry: string, env: Record<string, string> = {}): { tokens: number[]; text: string } {
  const stdout = execFileSync(
    process.execPath,
    [entry, 'generate', '--model', STORIES, '--prompt', 'Once upon a time', '--max-tokens', '12', '--json'],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' },
  );
  const json = JSON.parse(stdout.trim().split('\n').at(-1)!) as { completion_tokens: number[]; text: string };
  return { tokens: json.completion_tokens, text: json.text };
}

describe('compiled build (scripts/build.mjs)', () => {
  it('is fresh right after building, and stale once a bundled source differs from the stamp', () => {
    expect(checkCompiledBuild(ROOT, outdir)).toEqual({ fresh: true });
    const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'dropserve-stamp-'));
    try {
      const stamp = JSON.parse(fs.readFileSync(path.join(outdir, 'build-stamp.json'), 'utf8')) as {
        sources: Record<string, { size: number; mtimeMs: number }>;
      };
      expect(Object.keys(stamp.sources)).toContain('engine/worker/engine-worker.ts');
      stamp.sources['engine/worker/engine-worker.ts']!.size += 1;
      fs.writeFileSync(path.join(copy, 'build-stamp.json'), JSON.stringify(stamp));
      expect(checkCompiledBuild(ROOT, copy)).toEqual({
        fresh: false,
        reason: 'engine/worker/engine-worker.ts changed since the build',
      });
      expect(checkCompiledBuild(ROOT, path.join(copy, 'nothing-here')).fresh).toBe(false);
    } finally {
      fs.rmSync(copy, { recursive: true, force: true });
    }
  });

  it('generates what the sources generate', () => {
    const compiled = generate(path.join(outdir, 'cli/main.js'));
    const sources = generate(path.join(ROOT, 'bin/dropserve.js'), { DROPSERVE_RUN_FROM: 'source' });
    expect(compiled).toEqual(sources);
    expect(compiled.text).toBe(', there was a little girl named Lily. She');
  });
});

describe('compiled serve', () => {
  it('finds its proto files, dashboard assets and the built-in model from dist/, and logs the start-up breakdown', async () => {
    const grpc = await freePort();
    const child = spawn(
      process.execPath,
      [
        path.join(outdir, 'cli/main.js'),
        'serve',
        '--host',
        '127.0.0.1',
        '--port',
        '0',
        '--grpc-port',
        String(grpc),
        '--log-level',
        'debug',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() },
    );
    const lines: { msg?: string; http?: string; grpcPort?: number }[] = [];
    const serving = new Promise<{ http: string; grpcPort?: number }>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const entry = JSON.parse(line) as { msg?: string; http?: string; grpcPort?: number };
        lines.push(entry);
        if (typeof entry.http === 'string') resolve({ http: entry.http, grpcPort: entry.grpcPort });
      });
      child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const { http, grpcPort } = await serving;
      expect(grpcPort).toBe(grpc); // the proto files were found and loaded
      const page = await fetch(`${http}/dashboard/dashboard.js`);
      expect(page.status).toBe(200);
      expect((await page.text()).length).toBeGreaterThan(100);
      const startup = lines.find((l) => l.msg?.startsWith('start-up:'));
      expect(startup?.msg).toContain('worker start (compiled)');
      expect(startup?.msg).toContain('ORT session create');
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
