import type { KvLayout } from '../../kv-cache/kv-layout.ts';
import type { SublayerMask } from '../graph/io.ts';
import type { ModelConfig } from '../model/config.ts';
import { type DropSpec, maskOf, validateDropSpec } from '../plan/plan.ts';

/** A servable pruning level of the loaded model. */
export interface VariantDefinition {
  /** Served id: the model name for the full model, "<model>:<NAME>" otherwise. */
  id: string;
  spec: DropSpec;
}

export interface ResolvedVariant extends VariantDefinition {
  mask: SublayerMask;
  kvLayout: KvLayout;
}

export function resolveVariant(definition: VariantDefinition, config: ModelConfig): ResolvedVariant {
  validateDropSpec(definition.spec, config.numLayers, `variant ${definition.id}`);
  const mask = maskOf(definition.spec, config.numLayers);
  const keptLayers = mask.attnKeep.flatMap((keep, layer) => (keep ? [layer] : []));
  return {
    ...definition,
    mask,
    kvLayout: {
      keptLayers,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
      maxSeqLen: config.maxSeqLen,
    },
  };
}

/** "<model>:<name>" for pruned variants, the model name itself for the unpruned one. */
export function variantId(modelName: string, variantName: string | undefined): string {
  return variantName ? `${modelName}:${variantName}` : modelName;
}
