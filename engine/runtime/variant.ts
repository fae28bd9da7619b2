import type { KvLayout } from '../../kv-cache/kv-layout.ts';
import type { SublayerMask } from '../graph/io.ts';
import { kvLayoutOf } from '../graph/kv-bytes.ts';
import type { KvDtype } from '../graph/kv-dtype.ts';
import type { ModelConfig } from '../model/config.ts';
import type { AdaptiveSpec } from '../plan/adaptive-mask.ts';
import { type DropSpec, maskOf, validateDropSpec } from '../plan/plan.ts';

/** A servable pruning level of the loaded model. */
export interface VariantDefinition {
  /** Served id: the model name for the full model, "<model>:<NAME>" otherwise. */
  id: string;
  spec: DropSpec;
  /**
   * Input-adaptive: each sequence's prompt runs through the full model (spec drops nothing), and it
   * decodes without the sublayers that prompt's prefill found least influential.
   */
  adaptive?: AdaptiveSpec;
}

export interface ResolvedVariant extends VariantDefinition {
  mask: SublayerMask;
  kvLayout: KvLayout;
}

export function resolveVariant(
  definition: VariantDefinition,
  config: ModelConfig,
  kvDtype: KvDtype = 'fp32',
): ResolvedVariant {
  validateDropSpec(definition.spec, config.numLayers, `variant ${definition.id}`);
  if (
    definition.adaptive &&
    (definition.spec.dropAttention.length > 0 || definition.spec.dropMlp.length > 0)
  ) {
    throw new RangeError(`variant ${definition.id}: an adaptive variant drops only what each prompt chooses`);
  }
  const mask = maskOf(definition.spec, config.numLayers);
  // An adaptive variant's sequences keep L − K attention layers' KV, whichever they are: the
  // layout stands for that size when memory is planned.
  const kvLayout = definition.adaptive
    ? kvLayoutOf(
        config,
        Array.from({ length: definition.adaptive.attention }, (_, i) => i),
      )
    : kvLayoutOf(config, mask);
  return { ...definition, mask, kvLayout: kvDtype === 'fp16' ? { ...kvLayout, dtype: 'fp16' } : kvLayout };
}

/** "<model>:<name>" for pruned variants, the model name itself for the unpruned one. */
export function variantId(modelName: string, variantName: string | undefined): string {
  return variantName ? `${modelName}:${variantName}` : modelName;
}
