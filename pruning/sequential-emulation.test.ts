/**
 * The sequential emulation fit on the real stories260K (in the repository), with calibration text the
 * model samples itself: depth order, inputs taken from the pruned network (checked against the
 * plain-TS reference forward), the gate (an update that is exactly zero can never lower the loss, so
 * its sublayer must stay a plain drop), and what `prune plan` writes into the plan file.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PruneIo } from '../cli/prune.ts';
import { runPruneCommand } from '../cli/prune.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { loadPlanFile, maskOf } from '../engine/plan/plan.ts';
import { ReferenceModel } from '../engine/reference/forward.ts';
import { STORIES_260K } from '../tests/support/shared-assets.ts';
import { CalibrationLoss } from './calibration-loss.ts';
import { fitEmulation } from './emulation-plan.ts';
import type { ScoredSequence } from './sequences.ts';
import {
  fitEmulationSequentially,
  gatherUpdates,
  RIDGE_GRIDS,
  splitForValidation,
} from './sequential-emulation.ts';
import { sampleFromModel } from './testing/fixtures.ts';

let model: LoadedModel;
let session: ModelSession;
let samples: ScoredSequence[];
let dir: string;
const NO_OP_MLP = 3;

beforeAll(async () => {
  model = await loadModel({ model: STORIES_260K });
  // MLP 3 made a no-op: its update is exactly zero, so no emulation of it can beat a plain drop.
  model.weights.layers[NO_OP_MLP]!.wDown.fill(0);
  session = await ModelSession.create(model.config, model.weights, { outputHiddenStates: true });
  samples = await sampleFromModel(session, 8, 40, 3);
  dir = mkdtempSync(join(tmpdir(), 'dropserve-sequential-'));
});
afterAll(async () => {
  await session.release();
  rmSync(dir, { recursive: true, force: true });
});

describe('sequential emulation fit', () => {
  it('walks the drops in depth order, gates each on validation loss, and keeps a no-op sublayer plain', async () => {
    const spec = { dropAttention: [0], dropMlp: [NO_OP_MLP] };
    const fit = await fitEmulationSequentially(session, model.weights, samples, spec, { kind: 'bias' });
    expect(fit.fitSamples).toBe(6);
    expect(fit.validationSamples).toBe(2);
    expect(fit.decisions.map((d) => `${d.sublayer.kind} ${d.sublayer.layer}`)).toEqual([
      'attention 0',
      `mlp ${NO_OP_MLP}`,
    ]);
    const [attention, mlp] = fit.decisions;
    // attn 0 carries a large mean update on stories260K: its bias lowers the validation loss.
    expect(attention!.kept).toBe(true);
    expect(attention!.validationNllEmulated).toBeLessThan(attention!.validationNllPlain);
    expect(attention!.candidates.map((c) => c.ridge)).toEqual([...RIDGE_GRIDS.bias]);
    // The gate: every candidate of the zero update scores exactly the plain drop, so none is kept.
    expect(mlp!.kept).toBe(false);
    expect(mlp!.candidates.every((c) => c.validationNll === mlp!.validationNllPlain)).toBe(true);
    expect(fit.emulation.attention[0]).not.toBeNull();
    expect(fit.emulation.mlp[NO_OP_MLP]).toBeNull();
    expect(fit.file.entries.map((e) => `${e.sublayer} ${e.layer} ${e.kind}`)).toEqual(['attention 0 bias']);

    // The recorded validation figures are those of the returned emulation.
    const validation = new CalibrationLoss(session, splitForValidation(samples).validation);
    expect((await validation.evaluate({ ...spec, emulation: fit.emulation })).meanNll).toBeCloseTo(
      fit.validationNll.emulated,
      10,
    );
    expect(fit.validationNll.emulated).toBeLessThan(fit.validationNll.plain);
  });

  it('fits a deeper sublayer on the inputs the pruned network gives it, not the full model', async () => {
    // attn 2 with attn 0 dropped (and bias-emulated) above it: its pairs are read from hidden_4 →
    // hidden_5 of that network, as the plain-TS reference computes it.
    const { dim, numLayers } = model.config;
    const first = await fitEmulationSequentially(
      session,
      model.weights,
      samples,
      { dropAttention: [0], dropMlp: [] },
      {
        kind: 'bias',
      },
    );
    const upstream = { dropAttention: [0], dropMlp: [], emulation: first.emulation };
    const { fit: fitSamples } = splitForValidation(samples);
    const stats = await gatherUpdates(
      session,
      model.weights,
      fitSamples,
      upstream,
      { kind: 'attention', layer: 2 },
      {
        withRegression: false,
        target: 'block',
      },
    );
    const mean = new Float64Array(dim);
    let numTokens = 0;
    for (const { tokens } of fitSamples) {
      const reference = new ReferenceModel(model.config, model.weights);
      reference.forward(tokens, maskOf(upstream, numLayers));
      const h = reference.hiddenStates;
      for (let s = 0; s < tokens.length; s++) {
        for (let d = 0; d < dim; d++) mean[d] += h[5]![s * dim + d]! - h[4]![s * dim + d]!;
      }
      numTokens += tokens.length;
    }
    expect(stats.count).toBe(numTokens);
    for (let d = 0; d < dim; d++) expect(stats.sumY[d]! / stats.count).toBeCloseTo(mean[d]! / numTokens, 4);

    // The full-model fit of the same sublayer reads other inputs, so it finds another bias.
    const old = await fitEmulation(
      session,
      model.weights,
      fitSamples,
      { dropAttention: [0, 2], dropMlp: [] },
      {
        kind: 'bias',
      },
    );
    const oldBias = old.emulation.attention[2]!;
    if (oldBias.kind !== 'bias') throw new Error('expected a bias');
    const gap = Math.max(...Array.from(mean, (m, d) => Math.abs(m / numTokens - oldBias.bias[d]!)));
    expect(gap).toBeGreaterThan(1e-3);

    // Sequentially, the second decision is made after the first: its fit tokens are the fit split's.
    const both = await fitEmulationSequentially(
      session,
      model.weights,
      samples,
      { dropAttention: [0, 2], dropMlp: [] },
      {
        kind: 'bias',
      },
    );
    expect(both.decisions.map((d) => d.sublayer.layer)).toEqual([0, 2]);
    expect(both.decisions[1]!.fitTokens).toBe(numTokens);
    expect(both.decisions[0]!.kept).toBe(first.decisions[0]!.kept);
  });

  it('low-rank candidates per ridge carry their explained variance; each kept entry is one that beat the plain drop', async () => {
    const spec = { dropAttention: [2, 4], dropMlp: [] };
    const fit = await fitEmulationSequentially(
      session,
      model.weights,
      samples,
      spec,
      { kind: 'lowrank', rank: 4 },
      {
        ridges: [1e-2, 1],
      },
    );
    for (const d of fit.decisions) {
      expect(d.candidates.map((c) => c.ridge)).toEqual([1e-2, 1]);
      expect(d.candidates.every((c) => c.explainedVariance! > 0 && c.explainedVariance! <= 1)).toBe(true);
      expect(d.kept).toBe(d.validationNllEmulated < d.validationNllPlain);
      const entry = fit.emulation.attention[d.sublayer.layer];
      expect(entry === null ? 'plain' : entry.kind).toBe(d.kept ? 'lowrank' : 'plain');
    }
    expect(fit.validationNll.plain).toBe(fit.decisions[0]!.validationNllPlain);
  });

  it('refuses a split that leaves nothing to fit or to validate on', () => {
    expect(() => splitForValidation(samples.slice(0, 1))).toThrow(/at least 2 calibration samples/);
    expect(() => splitForValidation(samples, 8)).toThrow(/validation samples must be in 1\.\.7/);
  });
});

/** Short stories in the TinyStories style, written for this test. */
const STORIES = [
  'Once upon a time, there was a little cat named Tom. Tom liked to play with a red ball in the sun.',
  'Lily went to the park with her mom. She saw a big dog and a small bird. The bird sang a happy song.',
  'Ben had a toy car. He drove it on the floor and made it go fast. Then his sister wanted to play too.',
  'One day, a little girl found a shiny stone. She showed it to her friend, and they both smiled.',
  'The sun was warm and the sky was blue. Sam and his dad went to the lake to see the ducks swim.',
  'Mia was sad because her kite was stuck in a tree. Her brother climbed up and got it back for her.',
  'A small frog lived by the pond. Every day he jumped on the big green leaf and said hello to the fish.',
  'Tim and Sue baked a cake with mom. They put in eggs and milk. The cake was sweet and they ate it all.',
];

async function prune(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: PruneIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), showProgress: false };
  const code = await runPruneCommand(argv, io);
  return { code, stdout, stderr };
}

describe('prune plan --emulate with the sequential fit', () => {
  it('records per sublayer what the gate kept and the validation figures that decided it', async () => {
    const data = join(dir, 'stories.txt');
    writeFileSync(data, STORIES.join('\n<|endoftext|>\n'));
    const out = join(dir, 'attn.json');
    const common = ['--model', STORIES_260K, '--data', data, '--samples', '8', '--drop-attention', '2'];
    const { code, stdout } = await prune(['plan', ...common, '--emulate', 'bias', '--out', out]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/bias fitted sequentially on 6 samples, gated on 2 validation samples/);
    const plan = JSON.parse(readFileSync(out, 'utf8'));
    const record = plan.provenance.emulation_fit;
    expect(record).toMatchObject({ mode: 'sequential', fit_samples: 6, validation_samples: 2 });
    expect(record.ridge_grid).toEqual([...RIDGE_GRIDS.bias]);
    expect(record.sublayers.map((s: { sublayer: string }) => s.sublayer)).toEqual(
      [...plan.drop_attention].sort((a: number, b: number) => a - b).map((l: number) => `attn ${l}`),
    );
    for (const s of record.sublayers) {
      expect(s.kept).toBe(s.validation_nll_emulated < s.validation_nll_plain);
      expect(s.emulation).toBe(s.kept ? 'bias' : 'plain');
      expect(s.candidates).toHaveLength(RIDGE_GRIDS.bias.length);
      expect(stdout).toContain(`${s.sublayer.padEnd(7)} ${s.kept ? 'keep bias' : 'plain drop'}`);
    }
    // The side file holds exactly the kept emulations, and the plan loads back with them.
    const kept = record.sublayers.filter((s: { kept: boolean }) => s.kept);
    const sideFile = join(dir, 'attn.emulation.json');
    expect(existsSync(sideFile)).toBe(kept.length > 0);
    const loaded = loadPlanFile(out, model.config);
    const loadedKept = (loaded.spec.emulation?.attention ?? []).filter((e) => e !== null);
    expect(loadedKept).toHaveLength(kept.length);

    // The old fit stays available, and records itself as such.
    const fullOut = join(dir, 'attn-full.json');
    const full = await prune([
      'plan',
      ...common,
      '--emulate',
      'bias',
      '--emulate-fit',
      'full',
      '--out',
      fullOut,
    ]);
    expect(full.code).toBe(0);
    expect(JSON.parse(readFileSync(fullOut, 'utf8')).provenance.emulation_fit).toEqual({ mode: 'full' });
    expect(existsSync(join(dir, 'attn-full.emulation.json'))).toBe(true);
  });

  it('refuses bad --emulate-fit / --validation-samples values with the valid ones', async () => {
    const data = join(dir, 'stories.txt');
    writeFileSync(data, STORIES.join('\n<|endoftext|>\n'));
    const common = [
      'plan',
      '--model',
      STORIES_260K,
      '--data',
      data,
      '--drop-attention',
      '1',
      '--out',
      join(dir, 'x.json'),
    ];
    await expect(prune([...common, '--emulate', 'bias', '--emulate-fit', 'joint'])).rejects.toThrow(
      /--emulate-fit "joint": valid: sequential, full/,
    );
    await expect(prune([...common, '--emulate-fit', 'full'])).rejects.toThrow(
      /--emulate-fit needs --emulate bias\|lowrank/,
    );
    await expect(
      prune([...common, '--samples', '8', '--emulate', 'bias', '--validation-samples', '8']),
    ).rejects.toThrow(/--validation-samples 8: must be below the 8 calibration samples/);
    await expect(
      prune([...common, '--emulate', 'bias', '--emulate-fit', 'full', '--validation-samples', '2']),
    ).rejects.toThrow(/--validation-samples applies to --emulate-fit sequential/);
    expect(existsSync(join(dir, 'x.json'))).toBe(false);
  });
});
