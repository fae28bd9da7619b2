import type { EngineClient, VariantInfo } from '../../../engine/client.ts';
import type { BuiltInPlan } from '../../../engine/model/loaded-model.ts';
import { type AdaptiveView, adaptiveView } from '../../admin/variants/variant-load.ts';
import type { Experiment, ExperimentArm, ExperimentRouter } from '../../experiments/experiment-router.ts';

/** One OpenAI model object; vLLM's `root` (where it came from) and `parent` (the base of a variant). */
export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: 'dropserve';
  root: string;
  parent: string | null;
  max_model_len: number;
  /** Only on A/B experiments: the variants a request to this name is split between. */
  dropserve_experiment?: { arms: ExperimentArm[] };
  /** Where the weights came from; `built_in` when no --model was given (stories260K from models/). */
  dropserve_source?: {
    kind: string;
    description: string;
    built_in: boolean;
    /** Only for a loaded export (deci / gguf): the plan it carries, dropped in every variant. */
    plan?: { format: string; drop_attention: number[]; drop_mlp: number[]; emulation: string[] };
  };
  /** Only on variants: which sublayers it drops and what its KV cache costs. */
  dropserve_variant?: {
    drop_attention: number[];
    drop_mlp: number[];
    kv_bytes_per_token: number;
    /** Weight bytes one decoded token reads in this variant (kept sublayers as stored, lm_head). */
    weight_bytes_per_token: number;
    /** `--weights`: how the linear layers are stored. */
    weight_format: string;
    /** KV memory is taken in blocks of this many tokens (`--kv-block-tokens`). */
    kv_block_tokens: number;
    /** Where the KV buffers live: host or device. */
    kv_cache_placement: string;
    /** `--kv-admission`: on-demand or worst-case. Live KV usage is in GET /v1/variants. */
    kv_admission: string;
    /** Only on input-adaptive variants: sublayers each prompt drops, distinct drop sets so far. */
    adaptive?: AdaptiveView;
  };
}

/** The fields every card carries, in this order: variant and experiment cards differ only in id and parent. */
function baseCard(engine: EngineClient, id: string, parent: string | null): ModelCard {
  const { model } = engine;
  return {
    id,
    object: 'model',
    created: model.createdAt,
    owned_by: 'dropserve',
    root: model.source.path ?? model.source.id,
    parent,
    max_model_len: model.config.maxSeqLen,
  };
}

export function modelCardOf(engine: EngineClient, variant: VariantInfo): ModelCard {
  const { model } = engine;
  return {
    ...baseCard(engine, variant.id, variant.id === variant.base ? null : variant.base),
    dropserve_source: {
      kind: model.source.kind,
      description: model.source.description,
      built_in: model.source.builtIn === true,
      ...(model.builtInPlan ? { plan: planCardOf(model.builtInPlan) } : {}),
    },
    dropserve_variant: {
      drop_attention: variant.spec.dropAttention,
      drop_mlp: variant.spec.dropMlp,
      kv_bytes_per_token: variant.kvBytesPerToken,
      weight_bytes_per_token: variant.weightBytesPerToken ?? 0,
      weight_format: variant.weightFormat ?? 'fp32',
      kv_block_tokens: variant.kvBlockTokens,
      kv_cache_placement: variant.kvCachePlacement,
      kv_admission: variant.kvAdmission,
      ...(variant.adaptive ? { adaptive: adaptiveView(variant.adaptive) } : {}),
    },
  };
}

/** An A/B experiment is a routable model name too; `parent` is null (it is no one variant). */
export function experimentCardOf(engine: EngineClient, experiment: Experiment): ModelCard {
  return {
    ...baseCard(engine, experiment.name, null),
    dropserve_experiment: { arms: experiment.arms.map((a) => ({ ...a })) },
  };
}

export function listModels(
  engine: EngineClient,
  experiments?: ExperimentRouter,
): { object: 'list'; data: ModelCard[] } {
  const variants = engine.variants().map((v) => modelCardOf(engine, v));
  const tests = (experiments?.list() ?? []).map((e) => experimentCardOf(engine, e));
  return { object: 'list', data: [...variants, ...tests] };
}

/** The built-in plan as JSON: emulation lists "attention.N" / "mlp.N" for each linear replacement. */
function planCardOf(plan: BuiltInPlan): NonNullable<NonNullable<ModelCard['dropserve_source']>['plan']> {
  const emulated = (kind: string, list: readonly unknown[] | undefined): string[] =>
    (list ?? []).flatMap((e, l) => (e ? [`${kind}.${l}`] : []));
  return {
    format: plan.format,
    drop_attention: plan.dropAttention,
    drop_mlp: plan.dropMlp,
    emulation: [...emulated('attention', plan.emulation?.attention), ...emulated('mlp', plan.emulation?.mlp)],
  };
}
