/**
 * Builds plan files (schema: engine/plan/plan.ts) from a selection, with provenance, and writes a
 * plan and its emulation side file `<name>.emulation.json` together.
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { ModelConfig } from '../engine/model/config.ts';
import type { DropSpec, EmulationFile, PlanFile } from '../engine/plan/plan.ts';
import { PLAN_SCHEMA_ID, PLAN_VERSION, planSchema, planShapeOf } from '../engine/plan/plan.ts';
import { writeFilesAtomically } from './atomic-write.ts';

/** dropserve's version from package.json, for provenance. */
export function toolVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
      version?: string;
    };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export interface PlanProvenance {
  method: string;
  metric: string;
  data: string;
  samples: number;
  seqLen: number;
  scores: Record<string, number[]>;
  /** Extra fields kept as they are (the schema passes unknown provenance keys through). */
  extra?: Record<string, unknown>;
}

export function buildPlan(
  modelId: string,
  config: ModelConfig,
  spec: DropSpec,
  provenance: PlanProvenance,
  emulation?: { file: string; kind: 'bias' | 'lowrank'; rank?: number },
): PlanFile {
  const plan: PlanFile = {
    schema: PLAN_SCHEMA_ID,
    version: PLAN_VERSION,
    model: planShapeOf(modelId, config),
    drop_attention: [...spec.dropAttention].sort((a, b) => a - b),
    drop_mlp: [...spec.dropMlp].sort((a, b) => a - b),
    ...(emulation ? { emulation } : {}),
    provenance: {
      tool: `dropserve prune plan ${toolVersion()}`,
      method: provenance.method,
      metric: provenance.metric,
      data: provenance.data,
      samples: provenance.samples,
      seq_len: provenance.seqLen,
      created_at: new Date().toISOString(),
      scores: provenance.scores,
      ...provenance.extra,
    },
  };
  // Fail here, not when a server later loads it.
  planSchema.parse(plan);
  return plan;
}

/** `plan.json` → `plan.emulation.json` beside it. */
export function emulationPathFor(planPath: string): string {
  const name = basename(planPath).replace(/\.json$/i, '');
  return join(dirname(planPath), `${name}.emulation.json`);
}

export interface WrittenPlan {
  planPath: string;
  emulationPath?: string;
}

/** Writes the plan (and side file) atomically; the plan's emulation.file must name the side file. */
export function writePlan(planPath: string, plan: PlanFile, emulationFile?: EmulationFile): WrittenPlan {
  const files = [{ path: planPath, content: `${JSON.stringify(plan, null, 2)}\n` }];
  let emulationPath: string | undefined;
  if (emulationFile) {
    emulationPath = emulationPathFor(planPath);
    files.unshift({ path: emulationPath, content: `${JSON.stringify(emulationFile)}\n` });
  }
  writeFilesAtomically(files);
  return { planPath, emulationPath };
}
