import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { DropserveError } from '../errors.ts';
import type { Emulation, SublayerMask } from '../graph/io.ts';
import type { ModelConfig } from '../model/config.ts';

/**
 * A pruning plan: which attention / MLP sublayers a variant drops, optionally what emulates them,
 * and how the plan was found. The one place its schema lives; pruning/ writes it, engine/ reads it.
 */
export const PLAN_SCHEMA_ID = 'dropserve.plan';
export const PLAN_VERSION = 1;

const layerList = z.array(z.number().int().nonnegative());

export const planModelShapeSchema = z.object({
  id: z.string(),
  num_layers: z.number().int().positive(),
  dim: z.number().int().positive(),
  num_heads: z.number().int().positive(),
  num_kv_heads: z.number().int().positive(),
  head_dim: z.number().int().positive(),
  vocab_size: z.number().int().positive(),
});

export const planSchema = z.object({
  schema: z.literal(PLAN_SCHEMA_ID),
  version: z.literal(PLAN_VERSION),
  model: planModelShapeSchema,
  drop_attention: layerList,
  drop_mlp: layerList,
  /** Side file (JSON, path relative to the plan) holding emulation tensors (emulationFileSchema below). */
  emulation: z
    .object({
      file: z.string(),
      kind: z.enum(['bias', 'lowrank']),
      rank: z.number().int().nonnegative().optional(),
    })
    .optional(),
  provenance: z
    .object({
      tool: z.string(),
      method: z.string(),
      metric: z.string().optional(),
      data: z.string().optional(),
      samples: z.number().int().optional(),
      seq_len: z.number().int().optional(),
      created_at: z.string(),
      scores: z.record(z.string(), z.array(z.number())).optional(),
    })
    .passthrough()
    .optional(),
});

export type PlanFile = z.infer<typeof planSchema>;

/** Emulation side file: per dropped sublayer, plain number arrays (row-major). */
export const emulationFileSchema = z.object({
  schema: z.literal('dropserve.emulation'),
  version: z.literal(1),
  dim: z.number().int().positive(),
  entries: z.array(
    z.object({
      sublayer: z.enum(['attention', 'mlp']),
      layer: z.number().int().nonnegative(),
      kind: z.enum(['bias', 'lowrank']),
      bias: z.array(z.number()).optional(),
      rank: z.number().int().nonnegative().optional(),
      down: z.array(z.number()).optional(), // [dim, rank]
      up: z.array(z.number()).optional(), // [rank, dim]
    }),
  ),
});
export type EmulationFile = z.infer<typeof emulationFileSchema>;

/** What a variant drops: the representation every part of dropserve passes around. */
export interface DropSpec {
  dropAttention: number[];
  dropMlp: number[];
  emulation?: Emulation;
}

export function planShapeOf(id: string, config: ModelConfig): PlanFile['model'] {
  return {
    id,
    num_layers: config.numLayers,
    dim: config.dim,
    num_heads: config.numHeads,
    num_kv_heads: config.numKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
  };
}

/** Checks indices against the layer count; throws DS_INVALID_ARGUMENT naming the bad one. */
export function validateDropSpec(spec: DropSpec, numLayers: number, where = 'drop spec'): void {
  for (const [name, list] of [
    ['attention', spec.dropAttention],
    ['mlp', spec.dropMlp],
  ] as const) {
    for (const i of list) {
      if (!Number.isInteger(i) || i < 0 || i >= numLayers) {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `${where}: ${name} layer ${i} does not exist; this model has layers 0..${numLayers - 1}`,
        );
      }
    }
    if (new Set(list).size !== list.length) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `${where}: ${name} layer list has duplicates: ${list}`);
    }
  }
}

export function maskOf(spec: DropSpec, numLayers: number): SublayerMask {
  const attnKeep = Array.from({ length: numLayers }, (_, i) => !spec.dropAttention.includes(i));
  const mlpKeep = Array.from({ length: numLayers }, (_, i) => !spec.dropMlp.includes(i));
  return { attnKeep, mlpKeep, emulation: spec.emulation };
}

function parseLayerList(text: string, where: string): number[] {
  const trimmed = text.trim();
  if (trimmed === '') return [];
  return trimmed.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 0) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `${where}: "${s}" is not a layer index`);
    }
    return n;
  });
}

/** Inline spec "attn:1,3;mlp:2" (either part optional; "none" or "" = full model). */
export function parseInlineSpec(text: string): DropSpec {
  const spec: DropSpec = { dropAttention: [], dropMlp: [] };
  if (text.trim() === '' || text.trim() === 'none') return spec;
  for (const part of text.split(';')) {
    if (part.trim() === '') continue;
    const colon = part.indexOf(':');
    const key = colon < 0 ? '' : part.slice(0, colon).trim();
    const list = colon < 0 ? '' : part.slice(colon + 1);
    if (key === 'attn' || key === 'attention') spec.dropAttention = parseLayerList(list, `spec "${text}"`);
    else if (key === 'mlp') spec.dropMlp = parseLayerList(list, `spec "${text}"`);
    else {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `spec "${text}": expected parts like "attn:1,3" or "mlp:2" separated by ";", got "${part}"`,
      );
    }
  }
  return spec;
}

/** Reads and validates a plan file against the model it will be applied to. */
export function loadPlanFile(path: string, config: ModelConfig): { plan: PlanFile; spec: DropSpec } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `plan ${path}: cannot read JSON (${(e as Error).message})`,
    );
  }
  const parsed = planSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `plan ${path}: ${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
  }
  const plan = parsed.data;
  const shape = planShapeOf(plan.model.id, config);
  for (const key of Object.keys(shape) as (keyof typeof shape)[]) {
    if (key !== 'id' && shape[key] !== plan.model[key]) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `plan ${path} was made for another model shape: ${key} is ${plan.model[key]} in the plan but ${shape[key]} in this model`,
      );
    }
  }
  const spec: DropSpec = { dropAttention: plan.drop_attention, dropMlp: plan.drop_mlp };
  validateDropSpec(spec, config.numLayers, `plan ${path}`);
  if (plan.emulation) spec.emulation = loadEmulationFile(resolve(dirname(path), plan.emulation.file), config);
  return { plan, spec };
}

export function loadEmulationFile(path: string, config: ModelConfig): Emulation {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `emulation file ${path}: ${(e as Error).message}`);
  }
  const parsed = emulationFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `emulation file ${path}: ${parsed.error.issues[0]!.message}`,
    );
  }
  const file = parsed.data;
  if (file.dim !== config.dim) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `emulation file ${path}: dim is ${file.dim} but the model's is ${config.dim}`,
    );
  }
  const emulation: Emulation = {
    attention: Array(config.numLayers).fill(null),
    mlp: Array(config.numLayers).fill(null),
  };
  for (const e of file.entries) {
    if (e.layer >= config.numLayers) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `emulation file ${path}: layer ${e.layer} out of range`,
      );
    }
    const bias = e.bias ? Float32Array.from(e.bias) : undefined;
    if (bias && bias.length !== config.dim) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `emulation file ${path}: bias length ${bias.length} ≠ dim`,
      );
    }
    const target = e.sublayer === 'attention' ? emulation.attention : emulation.mlp;
    if (e.kind === 'bias') {
      if (!bias)
        throw new DropserveError('DS_INVALID_ARGUMENT', `emulation file ${path}: bias entry without bias`);
      target[e.layer] = { kind: 'bias', bias };
    } else {
      const rank = e.rank ?? 0;
      if (!e.down || !e.up || e.down.length !== config.dim * rank || e.up.length !== config.dim * rank) {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `emulation file ${path}: low-rank entry for ${e.sublayer} ${e.layer} needs down [dim×${rank}] and up [${rank}×dim]`,
        );
      }
      target[e.layer] = {
        kind: 'lowrank',
        bias,
        rank,
        down: Float32Array.from(e.down),
        up: Float32Array.from(e.up),
      };
    }
  }
  return emulation;
}
