import { execSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { checkCompiledBuild } from '../bin/compiled-build.js';
import { writeLlama2cCheckpoint, writeSyntheticLlama2cTokenizer } from '../engine/model/llama2c-writer.ts';
import { syntheticConfig, syntheticWeights } from '../engine/model/synthetic.ts';
import type { StartupPhase } from '../engine/startup-phases.ts';
import { commitId, median, printTable } from './common.ts';

/**
 * Cold start: from process start to the first generated token of `dropserve generate`, each run a
 * fresh child process, timed here from spawn to the first generated text on the child's stdout.
 * "source" runs the TypeScript through tsx (what a checkout without a build does); "dist" runs the
 * compiled CLI and worker; with --baseline REV, "REV" runs that commit's sources (extracted with git
 * archive into a temp dir) the same way, so an older load path is measured in the same run. The
 * modes alternate within each repetition so that load on the machine hits all alike.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLI = path.join(ROOT, 'bin/dropserve.js');
const STORIES260K = path.join(ROOT, 'models/stories260K/stories260K.bin');
const PROMPT = 'Once upon a time';

/** stories110M's shape (llama2.c): dim 768, 12 layers, 12 heads, hidden 2048, vocab 32000, context 1024. */
const SHAPE_110M = {
  dim: 768,
  hiddenDim: 2048,
  numLayers: 12,
  numHeads: 12,
  numKvHeads: 12,
  vocabSize: 32000,
  maxSeqLen: 1024,
  tieWordEmbeddings: true,
  ropeInterleaved: true,
};

interface Run {
  toFirstTokenMs: number;
  /** From the child's --log-level debug line; empty for a baseline that predates it. */
  phases: StartupPhase[];
}

export async function runStartupBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      reps: { type: 'string', default: '5' },
      'skip-110m': { type: 'boolean', default: false },
      baseline: { type: 'string' },
    },
  });
  const reps = Number(values.reps);
  const build = checkCompiledBuild(ROOT, path.join(ROOT, 'dist'));
  if (!build.fresh) {
    console.error(`bench startup: dist/ is not usable (${build.reason}); run npm run build first`);
    return 2;
  }
  const baseline = values.baseline;
  const modes = [...(baseline ? [baseline] : []), 'source', 'dist'];
  const cliFor = new Map(modes.map((mode) => [mode, mode === baseline ? extractBaseline(mode) : CLI]));
  const models = [{ name: 'stories260K', file: STORIES260K }];
  if (!values['skip-110m']) models.push({ name: 'synthetic-110M', file: synthetic110M() });
  console.log(
    `bench startup: spawn → first generated token of \`generate --max-tokens 1\`, ${reps} reps, ` +
      `${modes.join(' / ')}, ${os.cpus().length} CPUs, commit ${commitId()}`,
  );
  for (const { name, file } of models) {
    const runs = new Map<string, Run[]>(modes.map((m) => [m, []]));
    await coldStart('dist', CLI, file); // page cache warm for all: this measures start-up, not the disk
    for (let r = 0; r < reps; r++) {
      for (const mode of modes) runs.get(mode)!.push(await coldStart(mode, cliFor.get(mode)!, file));
    }
    const base = median(runs.get(modes[0]!)!.map((x) => x.toFirstTokenMs));
    console.log(`\n${name} (${path.basename(file)}, ${(fs.statSync(file).size / 2 ** 20).toFixed(1)} MiB)`);
    printTable(
      ['run from', 'to first token ms (median)', 'min', 'max', `speed-up vs ${modes[0]}`],
      modes.map((mode) => {
        const times = runs.get(mode)!.map((x) => x.toFirstTokenMs);
        const m = median(times);
        return [
          mode,
          Math.round(m),
          Math.round(Math.min(...times)),
          Math.round(Math.max(...times)),
          `${(base / m).toFixed(2)}×`,
        ];
      }),
    );
    const withPhases = modes.filter((mode) => runs.get(mode)!.every((x) => x.phases.length > 0));
    const phaseNames = runs.get('dist')![0]!.phases.map((p) => p.phase.replace(/ \((compiled|tsx)\)/, ''));
    printTable(
      ['phase (median ms, --log-level debug)', ...withPhases],
      phaseNames.map((phase, i) => [
        phase,
        ...withPhases.map((mode) =>
          Math.round(median(runs.get(mode)!.map((x) => x.phases[i]?.ms ?? Number.NaN))),
        ),
      ]),
    );
  }
  if (baseline) fs.rmSync(path.dirname(path.dirname(cliFor.get(baseline)!)), { recursive: true });
  return 0;
}

/** One `generate` in a fresh process; with --log-level debug its stderr carries the breakdown. */
function coldStart(mode: string, cli: string, model: string): Promise<Run> {
  const isBaseline = mode !== 'source' && mode !== 'dist';
  const args = [cli, 'generate', '--model', model, '--prompt', PROMPT, '--max-tokens', '1'];
  // A baseline may predate generate's --log-level: it gets only the timing taken here.
  if (!isBaseline) args.push('--log-level', 'debug');
  return new Promise((resolve, reject) => {
    const spawnedAt = performance.now();
    const child = spawn(process.execPath, args, {
      env: { ...process.env, DROPSERVE_RUN_FROM: isBaseline ? 'source' : mode },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // generate echoes the prompt, then streams the completion: the first byte past the prompt is
    // the first token (were its text empty, the exit stands in for it, a little late).
    let stdoutBytes = 0;
    let firstTokenAt: number | undefined;
    child.stdout.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (firstTokenAt === undefined && stdoutBytes > Buffer.byteLength(PROMPT)) {
        firstTokenAt = performance.now();
      }
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new Error(`generate (${mode}) exited with ${code}:\n${stderr}`));
        return;
      }
      const line = stderr.split('\n').find((l) => l.includes('"processStartToFirstTokenMs"'));
      const phases = line ? (JSON.parse(line) as { phases: StartupPhase[] }).phases : [];
      resolve({ toFirstTokenMs: (firstTokenAt ?? performance.now()) - spawnedAt, phases });
    });
  });
}

/** That commit's tree in a temp dir (git archive leaves the repository alone), on our node_modules. */
function extractBaseline(rev: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dropserve-baseline-'));
  execSync(
    `git -C ${JSON.stringify(ROOT)} archive ${JSON.stringify(rev)} | tar -x -C ${JSON.stringify(dir)}`,
  );
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return path.join(dir, 'bin/dropserve.js');
}

/** The 110M-shape checkpoint (random weights, fixed seed) in the temp dir, written once and reused. */
function synthetic110M(): string {
  const dir = path.join(os.tmpdir(), 'dropserve-bench-110m');
  const file = path.join(dir, 'synthetic-110M.bin');
  const config = syntheticConfig({ ...SHAPE_110M, headDim: SHAPE_110M.dim / SHAPE_110M.numHeads });
  const stamp = path.join(dir, 'complete');
  if (!fs.existsSync(stamp)) {
    console.log(`bench startup: writing the 110M-shape checkpoint to ${dir} (once)`);
    fs.mkdirSync(dir, { recursive: true });
    writeLlama2cCheckpoint(file, config, syntheticWeights(config, 110));
    writeSyntheticLlama2cTokenizer(path.join(dir, 'tokenizer.bin'), config.vocabSize);
    fs.writeFileSync(stamp, '');
  }
  return file;
}
