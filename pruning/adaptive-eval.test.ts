/** `dropserve prune eval --adaptive` on the real stories260K, on a few stories written for this test. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PruneIo } from '../cli/prune.ts';
import { runPruneCommand } from '../cli/prune.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { maskOf } from '../engine/plan/plan.ts';
import { STORIES_260K } from '../tests/support/shared-assets.ts';
import { residualPass } from './residual-stats.ts';
import { scoreSequences } from './scoring.ts';
import { lowestPerKind } from './select.ts';

const STORIES = [
  'Once upon a time, there was a little dog named Max. Max liked to run in the park. One day, he found a big stick under a tree. He was very happy and took it home to show his friend.',
  'Anna had a red kite. She went to the hill with her dad to fly it. The wind was strong and the kite went up high in the sky. Anna laughed and said, "Look, Dad, it is so high!"',
  'Tim was sad because it was raining. He could not play outside. His mom gave him a box of crayons, and Tim drew a big yellow sun. Soon the rain stopped and Tim went out to play.',
  'The bird sang.',
];
const PROMPT_TOKENS = 16;

let dir: string;
let data: string;
let running: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dropserve-adaptive-eval-'));
  data = join(dir, 'stories.txt');
  writeFileSync(data, `${STORIES.join('\n<|endoftext|>\n')}\n<|endoftext|>\n`);
  running = join(dir, 'running.txt');
  writeFileSync(running, STORIES.join('\n'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(argv: string[]): Promise<{ code: number; stdout: string }> {
  let stdout = '';
  const io: PruneIo = { stdout: (t) => (stdout += t), stderr: () => {}, showProgress: false };
  const code = await runPruneCommand(['eval', '--model', STORIES_260K, ...argv], io);
  return { code, stdout };
}

interface Fidelity {
  positions: number;
  delta_nll: number;
  nll: number;
  agreement: number;
  kl: number;
}

describe('prune eval --adaptive (continuation protocol)', () => {
  let model: LoadedModel;
  let session: ModelSession;
  beforeAll(async () => {
    model = await loadModel({ model: STORIES_260K });
    session = await ModelSession.create(model.config, model.weights, { outputHiddenStates: true });
  });
  afterAll(() => session?.release());

  it('compares adaptive attn:1 with every static 1-attention plan on the same positions', async () => {
    const { code, stdout } = await run([
      '--data',
      data,
      '--adaptive',
      'attn:1',
      '--prompt-tokens',
      String(PROMPT_TOKENS),
      '--json',
    ]);
    expect(code).toBe(0);
    const out = JSON.parse(stdout);
    // The fourth story ends inside the prompt: nothing to score.
    expect(out.documents).toBe(3);
    expect(out.skipped_short).toBe(1);
    const continuation = STORIES.slice(0, 3).reduce(
      (n, s) => n + model.tokenizer.encode(s, { addBos: true }).length - PROMPT_TOKENS,
      0,
    );
    expect(out.full).toMatchObject({ positions: continuation, delta_nll: 0, agreement: 1, kl: 0 });
    expect(out.adaptive_fidelity.positions).toBe(continuation);
    expect(out.static).toHaveLength(5);
    expect(out.static.map((s: { drop_attention: number[] }) => s.drop_attention).sort()).toEqual([
      [0],
      [1],
      [2],
      [3],
      [4],
    ]);
    const deltas = out.static.map((s: Fidelity) => s.delta_nll);
    expect(deltas).toEqual([...deltas].sort((a: number, b: number) => a - b));
    for (const f of [out.adaptive_fidelity, ...out.static] as Fidelity[]) {
      expect(f.positions).toBe(continuation);
      expect(f.kl).toBeGreaterThan(0);
      expect(f.agreement).toBeGreaterThan(0);
      expect(f.agreement).toBeLessThan(1);
      expect(f.delta_nll).toBeCloseTo(f.nll - out.full.nll, 6);
    }
    expect(out.distinct_masks).toBe(out.masks.length);
    expect(out.masks.reduce((n: number, m: { documents: number }) => n + m.documents, 0)).toBe(3);
    // Per mask, both sides are scored on that mask's documents: the positions add up to the total.
    const positionsOf = (side: 'adaptive' | 'best_static'): number =>
      out.masks.reduce((n: number, m: Record<string, Fidelity>) => n + m[side]!.positions, 0);
    expect(positionsOf('adaptive')).toBe(continuation);
    expect(positionsOf('best_static')).toBe(continuation);
    const adaptiveWins = out.adaptive_fidelity.delta_nll < out.static[0].delta_nll;
    expect(out.verdict).toMatch(adaptiveWins ? /^adaptive wins/ : /^static wins/);
    expect(out.kv_bytes_per_token).toBe((out.kv_bytes_per_token_full * 4) / 5);
  });

  it('a one-story run: the drop chosen is the toolkit’s cosine pick on the prompt, static NLL is the scorer’s', async () => {
    const single = join(dir, 'one.txt');
    writeFileSync(single, `${STORIES[1]}\n<|endoftext|>\n`);
    const { stdout } = await run([
      '--data',
      single,
      '--adaptive',
      'attn:2',
      '--prompt-tokens',
      String(PROMPT_TOKENS),
      '--drop-attention',
      '0,1',
      '--json',
    ]);
    const out = JSON.parse(stdout);
    const tokens = model.tokenizer.encode(STORIES[1]!, { addBos: true });
    const { metrics } = await residualPass(session, model.weights, [
      { tokens: tokens.slice(0, PROMPT_TOKENS), firstScored: 1 },
    ]);
    expect(out.masks).toHaveLength(1);
    expect(out.masks[0]).toMatchObject({
      drop_attention: lowestPerKind(metrics.cosine, { attention: 2, mlp: 0 }).dropAttention,
      drop_mlp: [],
      documents: 1,
    });
    // One document: its mask's figures are the whole run's.
    expect(out.masks[0].adaptive).toEqual(out.adaptive_fidelity);
    const { drop_attention: _a, drop_mlp: _m, ...bestStatic } = out.static[0];
    expect(out.masks[0].best_static).toEqual(bestStatic);
    // The plan named is the only static one, scored as pruning/scoring.ts scores a sequence.
    expect(out.static).toHaveLength(1);
    expect(out.static[0].drop_attention).toEqual([0, 1]);
    const [scored] = await scoreSequences(
      session,
      [{ tokens, firstScored: PROMPT_TOKENS }],
      maskOf({ dropAttention: [0, 1], dropMlp: [] }, model.config.numLayers),
    );
    expect(out.static[0].nll).toBeCloseTo(-scored!.logprob / scored!.numTokens, 5);
  });

  it.each([
    [['--adaptive', 'attn:5'], /--adaptive: .*would drop every layer/],
    [['--adaptive', 'heads:1'], /--adaptive: .*expected adaptive:attn:K/],
    [['--prompt-tokens', '8'], /--prompt-tokens needs --adaptive/],
    [['--adaptive', 'attn:1', '--prompt-tokens', '0'], /--prompt-tokens must be an integer ≥ 1/],
    [['--adaptive', 'attn:1', '--skip-docs', '9'], /--skip-docs 9 leaves no document of 4/],
  ])('%j is refused with a clear error', async (flags, message) => {
    await expect(run(['--data', data, ...flags])).rejects.toThrow(message);
  });

  it('refuses running text: the protocol scores whole documents', async () => {
    await expect(run(['--data', running, '--adaptive', 'attn:1'])).rejects.toThrow(
      /no "<\|endoftext\|>" lines/,
    );
  });
});
