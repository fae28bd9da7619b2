import { existsSync } from 'node:fs';
import { DropserveError } from '../../engine/errors.ts';
import type { ModelConfig } from '../../engine/model/config.ts';
import { type AdaptiveSpec, parseAdaptiveSpec } from '../../engine/plan/adaptive-mask.ts';
import { type DropSpec, loadPlanFile, parseInlineSpec, validateDropSpec } from '../../engine/plan/plan.ts';

/** A variant as given on the command line: its name and a plan file path or an inline spec. */
export interface VariantArg {
  name: string;
  /**
   * Plan file path, inline "attn:1,3;mlp:2" or input-adaptive "adaptive:attn:K[,mlp:M]"; or an
   * already parsed spec.
   */
  spec: string | DropSpec;
}

/** A variant the engine serves: a fixed drop set, or (adaptive) one chosen per prompt. */
export interface ResolvedVariantArg {
  name: string;
  spec: DropSpec;
  adaptive?: AdaptiveSpec;
}

const NO_DROPS: DropSpec = { dropAttention: [], dropMlp: [] };

// The name becomes part of a model id ("<model>:<NAME>") and a metrics label value.
const VARIANT_NAME = /^[A-Za-z0-9][\w.-]{0,63}$/;

/** `--variant NAME=SPEC` */
export function parseVariantFlag(text: string): VariantArg {
  const eq = text.indexOf('=');
  const name = eq < 0 ? '' : text.slice(0, eq).trim();
  if (!VARIANT_NAME.test(name)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--variant "${text}": expected NAME=SPEC with NAME of letters, digits, ".", "_" or "-" (e.g. attn-2=attn:1,3, lean=plans/lean.json or auto=adaptive:attn:2)`,
    );
  }
  return { name, spec: text.slice(eq + 1).trim() };
}

/**
 * Names must be unique; SPEC is adaptive when it starts with "adaptive:", a plan file when such a
 * file exists, an inline spec otherwise.
 */
export function resolveVariantArgs(args: readonly VariantArg[], config: ModelConfig): ResolvedVariantArg[] {
  const seen = new Set<string>();
  return args.map(({ name, spec }) => {
    if (seen.has(name)) throw new DropserveError('DS_INVALID_ARGUMENT', `--variant ${name} is given twice`);
    seen.add(name);
    if (typeof spec !== 'string') {
      validateDropSpec(spec, config.numLayers, `variant ${name}`);
      return { name, spec };
    }
    const adaptive = adaptiveSpecOf(name, spec, config);
    if (adaptive) return { name, spec: NO_DROPS, adaptive };
    if (existsSync(spec) || spec.endsWith('.json')) return { name, spec: loadPlanFile(spec, config).spec };
    const parsed = parseInlineSpec(spec);
    validateDropSpec(parsed, config.numLayers, `variant ${name}`);
    return { name, spec: parsed };
  });
}

function adaptiveSpecOf(name: string, spec: string, config: ModelConfig): AdaptiveSpec | null {
  try {
    return parseAdaptiveSpec(spec, config.numLayers);
  } catch (error) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--variant ${name}: ${(error as Error).message}`);
  }
}
