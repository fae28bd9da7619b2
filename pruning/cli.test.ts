/** `dropserve prune analyze|plan|eval` end to end on the real stories260K model, in-process. */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PruneIo } from '../cli/prune.ts';
import { runPruneCommand } from '../cli/prune.ts';
import {
  describeWithAssets,
  itWithAssets,
  STORIES_260K,
  TINYSTORIES_EVAL,
} from '../tests/support/shared-assets.ts';

const MODEL = STORIES_260K;
const DATA = TINYSTORIES_EVAL.path;
const CALIBRATION = ['--model', MODEL, '--data', DATA, '--samples', '6', '--seq-len', '64'];

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dropserve-prune-cli-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function run(
  argv: string[],
  onStderr?: (text: string) => void,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: PruneIo = {
    stdout: (t) => (stdout += t),
    stderr: (t) => {
      stderr += t;
      onStderr?.(t);
    },
    showProgress: false,
  };
  const code = await runPruneCommand(argv, io);
  return { code, stdout, stderr };
}

describeWithAssets([TINYSTORIES_EVAL], 'prune analyze', () => {
  it('--json gives per-layer scores of both kinds and a ranking sorted by them', async () => {
    const { code, stdout } = await run(['analyze', ...CALIBRATION, '--metric', 'angular', '--json']);
    expect(code).toBe(0);
    const out = JSON.parse(stdout);
    expect(out.metric).toBe('angular');
    expect(out.samples).toBe(6);
    expect(out.scores.attention).toHaveLength(5);
    expect(out.scores.mlp).toHaveLength(5);
    const scoreOf = (name: string) => {
      const [kind, layer] = name.split(' ');
      return out.scores[kind === 'attn' ? 'attention' : 'mlp'][Number(layer)];
    };
    const ranked = out.ranking.map(scoreOf);
    expect(ranked).toEqual([...ranked].sort((a: number, b: number) => a - b));
    expect(ranked.every((v: number) => v > 0 && v < 0.5)).toBe(true);
  });

  it('prints a table by default', async () => {
    const { stdout } = await run(['analyze', ...CALIBRATION, '--metric', 'rel-l2']);
    expect(stdout).toMatch(/^layer\s+attention\s+mlp$/m);
    expect(stdout).toMatch(/ranking \(most redundant first\): (attn|mlp) \d/);
  });
});

describeWithAssets([TINYSTORIES_EVAL], 'prune plan → eval', () => {
  it('writes a plan with provenance and a bias side file; eval applies it', async () => {
    const out = join(dir, 'attn2.json');
    const plan = await run([
      'plan',
      ...CALIBRATION,
      '--drop-attention',
      '2',
      '--method',
      'cosine',
      '--emulate',
      'bias',
      '--emulate-fit',
      'full',
      '--out',
      out,
      '--json',
    ]);
    expect(plan.code).toBe(0);
    const summary = JSON.parse(plan.stdout);
    expect(summary.drop_attention).toHaveLength(2);
    expect(summary.emulation_file).toBe(join(dir, 'attn2.emulation.json'));
    expect(existsSync(summary.emulation_file)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const full = JSON.parse(
      (await run(['eval', '--model', MODEL, '--data', DATA, '--max-docs', '4', '--json'])).stdout,
    );
    const pruned = JSON.parse(
      (await run(['eval', '--model', MODEL, '--data', DATA, '--max-docs', '4', '--plan', out, '--json']))
        .stdout,
    );
    expect(pruned.tokens).toBe(full.tokens);
    expect(pruned.perplexity).toBeGreaterThan(full.perplexity);
    expect(pruned.kv_bytes_per_token).toBe((full.kv_bytes_per_token * 3) / 5);
    expect(pruned.variant).toMatch(/emulation: bias/);
  });

  it('eval scores multiple-choice tasks (acc and acc_norm) for an inline drop', async () => {
    const tasks = join(dir, 'tasks.jsonl');
    const lines = [
      { context: 'Once upon a time, there was a little girl named', choices: [' Lily.', ' qzxv.'], label: 0 },
      { context: 'Tom and his mom went to the', choices: [' zzkq', ' park.'], label: 1 },
      { context: 'The cat said, "Meow!" The dog said, "', choices: ['Woof!"', 'Xq!"'], label: 0 },
    ];
    writeFileSync(tasks, lines.map((l) => JSON.stringify(l)).join('\n'));
    const { code, stdout } = await run([
      'eval',
      '--model',
      MODEL,
      '--data',
      DATA,
      '--max-docs',
      '2',
      '--tasks',
      tasks,
      '--drop-mlp',
      '4',
      '--json',
    ]);
    expect(code).toBe(0);
    const out = JSON.parse(stdout);
    expect(out.drop_mlp).toEqual([4]);
    expect(out.tasks.count).toBe(3);
    const fullTasks = JSON.parse(
      (await run(['eval', '--model', MODEL, '--data', DATA, '--max-docs', '1', '--tasks', tasks, '--json']))
        .stdout,
    ).tasks;
    expect(fullTasks.acc).toBe(1); // the trained model prefers words to gibberish
    expect(fullTasks.acc_norm).toBe(1);
  });
});

describe('bad input', () => {
  itWithAssets([TINYSTORIES_EVAL], 'unknown metric / method list the valid ones', async () => {
    await expect(run(['analyze', ...CALIBRATION, '--metric', 'magnitude'])).rejects.toThrow(
      /valid metrics: cosine, angular, rel-l2, ppl, shapley/,
    );
    await expect(
      run([
        'plan',
        ...CALIBRATION,
        '--drop-attention',
        '1',
        '--method',
        'taylor',
        '--out',
        join(dir, 'x.json'),
      ]),
    ).rejects.toThrow(/valid methods: cosine, angular, rel-l2, ppl-greedy, shapley, joint/);
  });

  itWithAssets([TINYSTORIES_EVAL], 'K larger than the layer count', async () => {
    await expect(
      run(['plan', ...CALIBRATION, '--drop-attention', '6', '--out', join(dir, 'x.json')]),
    ).rejects.toThrow(/--drop-attention 6 is larger than the model's 5 layers/);
    expect(existsSync(join(dir, 'x.json'))).toBe(false);
    await expect(
      run(['plan', ...CALIBRATION, '--drop-attention', '1', '--out', join(dir, 'no-such-dir', 'x.json')]),
    ).rejects.toThrow(/directory .*no-such-dir does not exist/);
  });

  it('empty and too-short data files', async () => {
    writeFileSync(join(dir, 'empty.txt'), '\n');
    writeFileSync(join(dir, 'short.txt'), '<|endoftext|>\n\n<|endoftext|>\n');
    await expect(run(['analyze', '--model', MODEL, '--data', join(dir, 'empty.txt')])).rejects.toThrow(
      /is empty/,
    );
    await expect(run(['eval', '--model', MODEL, '--data', join(dir, 'short.txt')])).rejects.toThrow(
      /nothing to score/,
    );
  });

  itWithAssets([TINYSTORIES_EVAL], 'a plan for another model shape', async () => {
    const out = join(dir, 'synthetic.json');
    await run([
      'plan',
      '--model',
      'synthetic',
      '--data',
      DATA,
      '--samples',
      '2',
      '--seq-len',
      '32',
      '--drop-attention',
      '1',
      '--out',
      out,
    ]);
    await expect(run(['eval', '--model', MODEL, '--data', DATA, '--plan', out])).rejects.toThrow(
      /another model shape: num_layers is 6/,
    );
  });

  it('unknown flags and subcommands', async () => {
    await expect(run(['eval', '--data', DATA, '--bogus'])).rejects.toThrow(/Unknown option '--bogus'/);
    expect((await run(['prune-everything'])).code).toBe(2);
  });
});

describeWithAssets([TINYSTORIES_EVAL], 'SIGINT', () => {
  it('stops a long plan search, exits 130 and writes nothing', async () => {
    const out = join(dir, 'interrupted.json');
    // Ctrl-C arrives with the command's first stderr message (model loading): its handler is in
    // place and the whole search lies ahead. The command checks the signal before every model run
    // and before writing, so the outcome is the same wherever a real Ctrl-C would land.
    const argv = ['plan', '--model', MODEL, '--data', DATA, '--samples', '64', '--seq-len', '256'];
    let interrupted = false;
    const pending = run(
      [
        ...argv,
        '--drop-attention',
        '1',
        '--drop-mlp',
        '1',
        '--method',
        'shapley',
        '--permutations',
        '400',
        '--out',
        out,
      ],
      () => {
        if (!interrupted) {
          interrupted = true;
          process.emit('SIGINT');
        }
      },
    );
    const { code, stderr } = await pending;
    expect(interrupted).toBe(true);
    expect(code).toBe(130);
    expect(stderr).toMatch(/interrupted; nothing was written/);
    expect(readdirSync(dir).filter((f) => f.startsWith('interrupted'))).toEqual([]);
  });
});
