/**
 * Emulated updates end to end: the bias fitted from the graph's hidden states equals the mean update
 * computed from the plain-TS reference's residual stream; the graph with that emulation equals the
 * reference with it; and a plan written with it loads back through engine/plan/plan.ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SublayerMask } from '../engine/graph/io.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { loadPlanFile, maskOf } from '../engine/plan/plan.ts';
import { ReferenceModel } from '../engine/reference/forward.ts';
import { fitEmulation, parseEmulationChoice } from './emulation-plan.ts';
import { buildPlan, writePlan } from './plan-file.ts';
import type { ScoredSequence } from './sequences.ts';
import { sampleFromModel, tinyModel } from './testing/fixtures.ts';

let model: LoadedModel;
let session: ModelSession;
let samples: ScoredSequence[];
let dir: string;
const DROP = { dropAttention: [1], dropMlp: [2] };

beforeAll(async () => {
  model = tinyModel();
  session = await ModelSession.create(model.config, model.weights, { outputHiddenStates: true });
  samples = await sampleFromModel(session, 4, 24);
  dir = mkdtempSync(join(tmpdir(), 'dropserve-emulation-'));
});
afterAll(async () => {
  await session.release();
  rmSync(dir, { recursive: true, force: true });
});

/** Logits of one sequence from the graph and from the reference, with the same mask. */
async function bothLogits(
  tokens: number[],
  mask: SublayerMask,
): Promise<{ graph: Float32Array; reference: Float32Array[] }> {
  const L = model.config.numLayers;
  const out = await session.run({
    batchSize: 1,
    seqLen: tokens.length,
    inputIds: tokens,
    positionIds: tokens.map((_, i) => i),
    mask,
    pastLengths: [0],
    past: mask.attnKeep
      .map((k) => (k ? { key: new Float32Array(0), value: new Float32Array(0) } : null))
      .slice(0, L),
    pastCapacity: 0,
    logitsIndex: tokens.map((_, i) => i),
  });
  const reference = new ReferenceModel(model.config, model.weights).forward(tokens, mask);
  return { graph: out.logits, reference };
}

function maxDiff(graph: Float32Array, reference: Float32Array[]): number {
  const V = model.config.vocabSize;
  let max = 0;
  reference.forEach((row, s) => {
    for (let v = 0; v < V; v++) max = Math.max(max, Math.abs(row[v]! - graph[s * V + v]!));
  });
  return max;
}

describe('bias emulation', () => {
  it('b = mean(x_out − x_in) over calibration tokens, as the reference computes it', async () => {
    const fitted = await fitEmulation(session, model.weights, samples, DROP, { kind: 'bias' });
    const { dim } = model.config;
    const expected = { attention: new Float64Array(dim), mlp: new Float64Array(dim) };
    let numTokens = 0;
    for (const { tokens } of samples) {
      const reference = new ReferenceModel(model.config, model.weights);
      reference.forward(tokens, maskOf({ dropAttention: [], dropMlp: [] }, model.config.numLayers));
      const h = reference.hiddenStates; // attention 1: hidden_2 → hidden_3; MLP 2: hidden_5 → hidden_6
      for (let s = 0; s < tokens.length; s++) {
        for (let d = 0; d < dim; d++) {
          expected.attention[d] += h[3]![s * dim + d]! - h[2]![s * dim + d]!;
          expected.mlp[d] += h[6]![s * dim + d]! - h[5]![s * dim + d]!;
        }
      }
      numTokens += tokens.length;
    }
    const attention = fitted.emulation.attention[1]!;
    const mlp = fitted.emulation.mlp[2]!;
    expect(attention.kind).toBe('bias');
    for (let d = 0; d < dim; d++) {
      expect(attention.bias![d]).toBeCloseTo(expected.attention[d]! / numTokens, 4);
      expect(mlp.bias![d]).toBeCloseTo(expected.mlp[d]! / numTokens, 4);
    }
    expect(fitted.emulation.attention.filter(Boolean)).toHaveLength(1);
    expect(fitted.file.entries.map((e) => `${e.sublayer} ${e.layer} ${e.kind}`)).toEqual([
      'attention 1 bias',
      'mlp 2 bias',
    ]);

    // The emulated graph equals the reference with the same emulation, and differs from a plain drop.
    const mask = maskOf({ ...DROP, emulation: fitted.emulation }, model.config.numLayers);
    const tokens = samples[0]!.tokens;
    const { graph, reference } = await bothLogits(tokens, mask);
    expect(maxDiff(graph, reference)).toBeLessThan(1e-4);
    const plain = await bothLogits(tokens, maskOf(DROP, model.config.numLayers));
    expect(maxDiff(plain.graph, reference)).toBeGreaterThan(1e-2);
  });
});

describe('low-rank emulation', () => {
  it('fits rank-4 maps whose graph output equals the reference, and round-trips through a plan file', async () => {
    const choice = parseEmulationChoice('lowrank:4', model.config.dim);
    if (choice.kind !== 'lowrank') throw new Error('expected lowrank');
    const fitted = await fitEmulation(session, model.weights, samples, DROP, choice);
    const entry = fitted.emulation.attention[1]!;
    expect(entry.kind).toBe('lowrank');
    expect(Object.values(fitted.explainedVariance).every((v) => v > 0 && v <= 1)).toBe(true);
    const mask = maskOf({ ...DROP, emulation: fitted.emulation }, model.config.numLayers);
    const { graph, reference } = await bothLogits(samples[1]!.tokens, mask);
    expect(maxDiff(graph, reference)).toBeLessThan(1e-4);

    const planPath = join(dir, 'plan.json');
    const plan = buildPlan(
      model.source.id,
      model.config,
      DROP,
      {
        method: 'cosine',
        metric: 'cosine',
        data: 'samples',
        samples: 4,
        seqLen: 24,
        scores: { attention: [0.1, 0.2, 0.3, 0.4] },
      },
      { file: 'plan.emulation.json', kind: 'lowrank', rank: 4 },
    );
    const written = writePlan(planPath, plan, fitted.file);
    expect(written.emulationPath).toBe(join(dir, 'plan.emulation.json'));
    const loaded = loadPlanFile(planPath, model.config);
    expect(loaded.spec.dropAttention).toEqual([1]);
    expect(loaded.spec.dropMlp).toEqual([2]);
    const back = loaded.spec.emulation!.attention[1]!;
    if (back.kind !== 'lowrank' || entry.kind !== 'lowrank') throw new Error('expected lowrank');
    expect(Array.from(back.down)).toEqual(Array.from(entry.down));
    expect(Array.from(back.bias!)).toEqual(Array.from(entry.bias!));
  });

  it('a plan for another model shape is refused', () => {
    const planPath = join(dir, 'other.json');
    const plan = buildPlan(
      'x',
      model.config,
      { dropAttention: [0], dropMlp: [] },
      {
        method: 'cosine',
        metric: 'cosine',
        data: 'd',
        samples: 1,
        seqLen: 2,
        scores: {},
      },
    );
    writeFileSync(planPath, JSON.stringify({ ...plan, model: { ...plan.model, dim: 48 } }));
    expect(() => loadPlanFile(planPath, model.config)).toThrow(/another model shape: dim is 48/);
    expect(JSON.parse(readFileSync(planPath, 'utf8')).provenance.tool).toMatch(/^dropserve prune plan /);
  });

  it('rejects unknown emulation kinds with the valid ones', () => {
    expect(() => parseEmulationChoice('lora')).toThrow(/valid: none, bias, lowrank \(rank 8\), lowrank:R/);
    expect(parseEmulationChoice('lowrank', 64)).toEqual({ kind: 'lowrank', rank: 8 });
    expect(parseEmulationChoice('lowrank', 4)).toEqual({ kind: 'lowrank', rank: 4 });
    expect(() => parseEmulationChoice('lowrank:0')).toThrow(/rank must be/);
  });
});
