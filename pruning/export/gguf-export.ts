import fs from 'node:fs';
import path from 'node:path';
import { DropserveError } from '../../engine/errors.ts';
import {
  GGUF_WRITE_TYPES,
  type GgufWriteType,
  ggufArchitectureFor,
  writeModelAsGguf,
} from '../../engine/model/gguf-writer.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import { type DropSpec, validateDropSpec } from '../../engine/plan/plan.ts';

export interface GgufExportOptions {
  /** Weight type of the matrices (norms stay F32). */
  type: GgufWriteType;
  /** The .gguf file to write. */
  out: string;
  /** Export a plan with emulations anyway, leaving the emulations out (they have no GGUF form). */
  dropEmulation?: boolean;
  /** Replace an existing --out file (refused otherwise). */
  force?: boolean;
}

export interface GgufExportResult {
  file: string;
  architecture: 'llama' | 'deci';
  bytes: number;
  /** Blocks in the file (whole dropped blocks are removed). */
  blockCount: number;
  /** The plan the file carries, numbered as the file's blocks (what dropserve reports when serving it). */
  filePlan: DropSpec;
}

/**
 * `prune export --format gguf`: a plan dropping whole blocks becomes a shorter `llama` file; any
 * plan dropping single sublayers becomes llama.cpp's `deci` (per-layer head counts and FFN widths,
 * see engine/model/gguf-writer.ts). Emulations are refused: llama.cpp has no bias or low-rank
 * replacement tensor (its deci "linear attention" is one full [dim, dim] matrix, not a low-rank pair).
 */
export function exportGguf(model: LoadedModel, plan: DropSpec, options: GgufExportOptions): GgufExportResult {
  if (!GGUF_WRITE_TYPES.includes(options.type)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--type ${options.type}: expected one of ${GGUF_WRITE_TYPES.join(', ')}`,
    );
  }
  validateDropSpec(plan, model.config.numLayers, 'plan');
  const hasEmulation =
    plan.emulation !== undefined &&
    [...plan.emulation.attention, ...plan.emulation.mlp].some((e) => e !== null);
  if (hasEmulation && !options.dropEmulation) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      'the plan has emulations (bias / low-rank replacements), which GGUF cannot hold; pass --drop-emulation to export the plain drops without them',
    );
  }
  const drop: DropSpec = { dropAttention: plan.dropAttention, dropMlp: plan.dropMlp };
  const keptAttention = model.config.numLayers - drop.dropAttention.length;
  const keptMlp = model.config.numLayers - drop.dropMlp.length;
  if (keptAttention === 0 || keptMlp === 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      'the plan drops every attention or every MLP sublayer; GGUF readers need at least one of each',
    );
  }
  if (fs.existsSync(options.out) && !options.force) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--out ${options.out} already exists; pass --force to replace it`,
      { param: 'out' },
    );
  }
  const architecture = ggufArchitectureFor(drop);
  fs.mkdirSync(path.dirname(path.resolve(options.out)), { recursive: true });
  // Written beside the target and renamed, so a failed export leaves no half-written .gguf behind.
  const partial = `${options.out}.partial`;
  try {
    writeModelAsGguf(partial, model, { type: options.type, drop });
    fs.renameSync(partial, options.out);
  } finally {
    fs.rmSync(partial, { force: true });
  }
  const removed = drop.dropAttention.filter((l) => drop.dropMlp.includes(l));
  const renumber = (layers: number[]) =>
    layers
      .filter((l) => !removed.includes(l))
      .map((l) => l - removed.filter((r) => r < l).length)
      .sort((a, b) => a - b);
  return {
    filePlan: { dropAttention: renumber(drop.dropAttention), dropMlp: renumber(drop.dropMlp) },
    file: options.out,
    architecture,
    bytes: fs.statSync(options.out).size,
    blockCount: model.config.numLayers - removed.length,
  };
}
