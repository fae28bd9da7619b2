import { spawn } from 'node:child_process';
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
 * fresh child process. "source" runs the TypeScript through tsx (the old way, still what a checkout
 * without a build does); "dist" runs the compiled CLI and worker. The two alternate within each
 * repetition so that load on the machine hits both alike.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLI = path.join(ROOT, 'bin/dropserve.js');
const STORIES260K = path.join(ROOT, 'models/stories260K/stories260K.bin');
const MODES = ['source', 'dist'] as const;
type Mode = (typeof MODES)[number];

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
  phases: StartupPhase[];
}

export async function runStartupBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      reps: { type: 'string', default: '5' },
      'skip-110m': { type: 'boolean', default: false },
    },
  });
  const reps = Number(values.reps);
  const build = checkCompiledBuild(ROOT, path.join(ROOT, 'dist'));
  if (!build.fresh) {
    console.error(`bench startup: dist/ is not usable (${build.reason}); run npm run build first`);
    return 2;
  }
  const models = [{ name: 'stories260K', file: STORIES260K }];
  if (!values['skip-110m']) models.push({ name: 'synthetic-110M', file: synthetic110M() });
  console.log(
    `bench startup: process start → first token of \`generate --max-tokens 1\`, ${reps} reps, ` +
      `tsx sources vs compiled dist/, ${os.cpus().length} CPUs, commit ${commitId()}`,
  );
  for (const { name, file } of models) {
    const runs = new Map<Mode, Run[]>(MODES.map((m) => [m, []]));
    await coldStart('dist', file); // page cache warm for both: this measures start-up, not the disk
    for (let r = 0; r < reps; r++) {
      for (const mode of MODES) runs.get(mode)!.push(await coldStart(mode, file));
    }
    const base = median(runs.get('source')!.map((x) => x.toFirstTokenMs));
    console.log(`\n${name} (${path.basename(file)}, ${(fs.statSync(file).size / 2 ** 20).toFixed(1)} MiB)`);
    printTable(
      ['run from', 'to first token ms (median)', 'min', 'max', 'vs source'],
      MODES.map((mode) => {
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
    const phaseNames = runs.get('dist')![0]!.phases.map((p) => p.phase.replace(/ \((compiled|tsx)\)/, ''));
    printTable(
      ['phase (median ms)', ...MODES],
      phaseNames.map((phase, i) => [
        phase,
        ...MODES.map((mode) => Math.round(median(runs.get(mode)!.map((x) => x.phases[i]?.ms ?? Number.NaN)))),
      ]),
    );
  }
  return 0;
}

/** One `generate` in a fresh process; its --log-level debug line carries the breakdown. */
function coldStart(mode: Mode, model: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'generate',
        '--model',
        model,
        '--prompt',
        'Once upon a time',
        '--max-tokens',
        '1',
        '--json',
        '--log-level',
        'debug',
      ],
      { env: { ...process.env, DROPSERVE_RUN_FROM: mode }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = stderr.split('\n').find((l) => l.includes('"processStartToFirstTokenMs"'));
      if (code !== 0 || !line) {
        reject(new Error(`generate (${mode}) exited with ${code}, no start-up line:\n${stderr}`));
        return;
      }
      const parsed = JSON.parse(line) as { processStartToFirstTokenMs: number; phases: StartupPhase[] };
      resolve({ toFirstTokenMs: parsed.processStartToFirstTokenMs, phases: parsed.phases });
    });
  });
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
