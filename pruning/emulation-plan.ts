/**
 * `--emulate none|bias|lowrank[:R]`: the choice, and the original fit (`--emulate-fit full`) of
 * replacements for a plan's dropped sublayers on full-model activations of the calibration samples
 * (emulation-fit.ts has the maths; sequential-emulation.ts the default fit inside the pruned
 * network), packed both for the graph (io.ts Emulation) and for the plan's side file
 * (plan.ts emulationFileSchema).
 */
import { DropserveError } from '../engine/errors.ts';
import type { Emulation, SublayerEmulation } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import type { ModelWeights } from '../engine/model/weights.ts';
import type { DropSpec, EmulationFile } from '../engine/plan/plan.ts';
import { DEFAULT_RIDGE, fitBias, fitLowRank } from './emulation-fit.ts';
import { residualPass } from './residual-stats.ts';
import type { ScoredSequence } from './sequences.ts';
import type { Sublayer } from './sublayers.ts';
import { removedSublayers, sublayerName } from './sublayers.ts';

export type EmulationChoice = { kind: 'none' } | { kind: 'bias' } | { kind: 'lowrank'; rank: number };

/** Rank of a bare `--emulate lowrank` (capped at the model's width). */
export const DEFAULT_EMULATION_RANK = 8;

export function parseEmulationChoice(text: string, dim?: number): EmulationChoice {
  if (text === 'none' || text === 'bias') return { kind: text };
  if (text === 'lowrank')
    return { kind: 'lowrank', rank: Math.min(DEFAULT_EMULATION_RANK, dim ?? DEFAULT_EMULATION_RANK) };
  const match = /^lowrank:(\d+)$/.exec(text);
  if (match) {
    const rank = Number(match[1]);
    if (rank < 1 || (dim !== undefined && rank > dim)) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--emulate lowrank:${rank}: rank must be in 1..${dim ?? 'dim'}`,
      );
    }
    return { kind: 'lowrank', rank };
  }
  throw new DropserveError(
    'DS_INVALID_ARGUMENT',
    `unknown emulation "${text}"; valid: none, bias, lowrank (rank ${DEFAULT_EMULATION_RANK}), lowrank:R (R = rank, e.g. lowrank:16)`,
    { param: 'emulate' },
  );
}

export function describeEmulation(choice: EmulationChoice): string {
  return choice.kind === 'lowrank' ? `lowrank:${choice.rank}` : choice.kind;
}

export interface FittedEmulation {
  emulation: Emulation;
  file: EmulationFile;
  /** Per dropped sublayer (by name): explained variance of its update on calibration (low-rank only). */
  explainedVariance: Record<string, number>;
}

export interface FitEmulationOptions {
  ridge?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

/** Fits the chosen emulation for every sublayer `spec` drops. The session must output hidden states. */
export async function fitEmulation(
  session: ModelSession,
  weights: ModelWeights,
  samples: readonly ScoredSequence[],
  spec: DropSpec,
  choice: Exclude<EmulationChoice, { kind: 'none' }>,
  options: FitEmulationOptions = {},
): Promise<FittedEmulation> {
  const { numLayers, dim } = session.config;
  const dropped = removedSublayers(spec);
  let done = 0;
  const pass = await residualPass(session, weights, samples, {
    fitTargets: dropped.map((sublayer) => ({ sublayer, withRegression: choice.kind === 'lowrank' })),
    signal: options.signal,
    onProgress: (n) => options.onProgress?.((done += n), samples.length),
  });
  const emulation: Emulation = { attention: Array(numLayers).fill(null), mlp: Array(numLayers).fill(null) };
  const file: EmulationFile = { schema: 'dropserve.emulation', version: 1, dim, entries: [] };
  const explainedVariance: Record<string, number> = {};
  for (const sublayer of dropped) {
    const stats = pass.updates.get(sublayerName(sublayer))!;
    let entry: SublayerEmulation;
    if (choice.kind === 'bias') {
      entry = { kind: 'bias', bias: fitBias(stats) };
    } else {
      const fit = fitLowRank(stats, choice.rank, options.ridge ?? DEFAULT_RIDGE);
      entry = { kind: 'lowrank', bias: fit.bias, down: fit.down, up: fit.up, rank: fit.rank };
      explainedVariance[sublayerName(sublayer)] = fit.explainedVariance;
    }
    file.entries.push(emulationFileEntry(sublayer, entry));
    emulation[sublayer.kind][sublayer.layer] = entry;
  }
  return { emulation, file, explainedVariance };
}

/** One sublayer's emulation as the side file stores it (plain number arrays). */
export function emulationFileEntry(
  sublayer: Sublayer,
  entry: SublayerEmulation,
): EmulationFile['entries'][number] {
  const where = { sublayer: sublayer.kind, layer: sublayer.layer };
  if (entry.kind === 'bias') return { ...where, kind: 'bias', bias: Array.from(entry.bias) };
  return {
    ...where,
    kind: 'lowrank',
    rank: entry.rank,
    ...(entry.bias ? { bias: Array.from(entry.bias) } : {}),
    down: Array.from(entry.down),
    up: Array.from(entry.up),
  };
}
