/**
 * `dropserve prune export`: a plan as a model other engines serve. `hf` removes whole blocks from a
 * standard Hugging Face checkpoint; `deci` writes any plan as DeciLM (Llama-Nemotron-NAS), which vLLM
 * (DeciLMForCausalLM) and llama.cpp (architecture `deci`) load and dropserve loads back.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DropserveError } from '../../engine/errors.ts';
import { exportHuggingFaceDir } from '../../engine/model/hf-export.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import type { DropSpec, PlanFile } from '../../engine/plan/plan.ts';
import { writeDeciFiles } from './deci-export.ts';
import { type ExportableModel, exportableModel } from './exportable-model.ts';
import { exportForms } from './linear-forms.ts';

export const DIRECTORY_FORMATS = ['hf', 'deci'] as const;
export type DirectoryFormat = (typeof DIRECTORY_FORMATS)[number];

export interface DirectoryExportOptions {
  format: DirectoryFormat;
  model: LoadedModel;
  plan: PlanFile;
  spec: DropSpec;
  out: string;
  tokenizer?: string;
  dropEmulation: boolean;
  force: boolean;
}

export interface DirectoryExportResult {
  out: string;
  layers: number;
  files: string[];
  /** Emulations left out under --drop-emulation. */
  notes: string[];
}

export function exportPlanAsDirectory(options: DirectoryExportOptions): DirectoryExportResult {
  const { out } = options;
  if (
    fs.existsSync(out) &&
    (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0) &&
    !options.force
  ) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `${out} exists and is not empty (pass --force to replace it)`,
      {
        param: 'out',
      },
    );
  }
  const model = exportableModel(options.model, options.tokenizer);
  // Built beside the target and renamed into place: a failed export leaves no half-written model.
  const partial = `${path.resolve(out)}.partial-${process.pid}`;
  fs.rmSync(partial, { recursive: true, force: true });
  fs.mkdirSync(partial, { recursive: true });
  try {
    const result =
      options.format === 'hf'
        ? writeBlockDroppedHf(partial, model, options)
        : writeDeci(partial, model, options);
    for (const [from, name] of model.tokenizerFiles) fs.copyFileSync(from, path.join(partial, name));
    fs.writeFileSync(
      path.join(partial, 'dropserve_plan.json'),
      `${JSON.stringify({ format: options.format, plan: options.plan }, null, 2)}\n`,
    );
    fs.rmSync(out, { recursive: true, force: true });
    fs.renameSync(partial, out);
    return { out, layers: result.layers, notes: result.notes, files: fs.readdirSync(out).sort() };
  } catch (e) {
    fs.rmSync(partial, { recursive: true, force: true });
    throw e;
  }
}

function writeBlockDroppedHf(
  dir: string,
  model: ExportableModel,
  options: DirectoryExportOptions,
): { layers: number; notes: string[] } {
  const { spec } = options;
  const attention = new Set(spec.dropAttention);
  const mlp = new Set(spec.dropMlp);
  const partial = [
    ...[...attention].filter((l) => !mlp.has(l)).map((l) => `attention ${l}`),
    ...[...mlp].filter((l) => !attention.has(l)).map((l) => `MLP ${l}`),
  ];
  if (partial.length > 0) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `prune export --format hf removes whole blocks only, but the plan drops ${partial.join(', ')} without the rest of the layer; ` +
        'use --format deci (DeciLM per-layer block_configs) for sublayer drops',
      { param: 'format' },
    );
  }
  const emulated = [...(spec.emulation?.attention ?? []), ...(spec.emulation?.mlp ?? [])].some((e) => e);
  const notes: string[] = [];
  if (emulated) {
    if (!options.dropEmulation) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        'prune export --format hf: the plan emulates dropped sublayers, which a plain Llama cannot express; ' +
          'use --format deci (low-rank emulation becomes replace_with_linear) or pass --drop-emulation',
        { param: 'drop-emulation' },
      );
    }
    notes.push('emulation left out: removed blocks are plain skips');
  }
  const kept = model.weights.layers.filter((_, l) => !attention.has(l));
  if (kept.length === 0) {
    throw new DropserveError('DS_INVALID_ARGUMENT', 'prune export: the plan drops every layer');
  }
  const config = { ...model.config, numLayers: kept.length };
  exportHuggingFaceDir(dir, config, { ...model.weights, layers: kept });
  return { layers: kept.length, notes };
}

function writeDeci(
  dir: string,
  model: ExportableModel,
  options: DirectoryExportOptions,
): { layers: number; notes: string[] } {
  const { config } = model;
  const forms = exportForms(options.spec, config.numLayers, config.dim, options.dropEmulation);
  const files = writeDeciFiles(dir, model, forms);
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), content);
  return { layers: config.numLayers, notes: forms.dropped };
}
