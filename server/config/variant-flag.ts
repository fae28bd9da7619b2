import { existsSync } from 'node:fs';
import { DropserveError } from '../../engine/errors.ts';
import type { ModelConfig } from '../../engine/model/config.ts';
import { type DropSpec, loadPlanFile, parseInlineSpec, validateDropSpec } from '../../engine/plan/plan.ts';

/** A variant as given on the command line: its name and a plan file path or an inline spec. */
export interface VariantArg {
  name: string;
  /** Plan file path or inline "attn:1,3;mlp:2"; or an already parsed spec. */
  spec: string | DropSpec;
}

// The name becomes part of a model id ("<model>:<NAME>") and a metrics label value.
const VARIANT_NAME = /^[A-Za-z0-9][\w.-]{0,63}$/;

/** `--variant NAME=SPEC` */
export function parseVariantFlag(text: string): VariantArg {
  const eq = text.indexOf('=');
  const name = eq < 0 ? '' : text.slice(0, eq).trim();
  if (!VARIANT_NAME.test(name)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--variant "${text}": expected NAME=SPEC with NAME of letters, digits, ".", "_" or "-" (e.g. attn-2=attn:1,3 or lean=plans/lean.json)`,
    );
  }
  return { name, spec: text.slice(eq + 1).trim() };
}

/** Names must be unique; SPEC is a plan file when such a file exists, an inline spec otherwise. */
export function resolveVariantArgs(
  args: readonly VariantArg[],
  config: ModelConfig,
): { name: string; spec: DropSpec }[] {
  const seen = new Set<string>();
  return args.map(({ name, spec }) => {
    if (seen.has(name)) throw new DropserveError('DS_INVALID_ARGUMENT', `--variant ${name} is given twice`);
    seen.add(name);
    if (typeof spec !== 'string') {
      validateDropSpec(spec, config.numLayers, `variant ${name}`);
      return { name, spec };
    }
    if (existsSync(spec) || spec.endsWith('.json')) return { name, spec: loadPlanFile(spec, config).spec };
    const parsed = parseInlineSpec(spec);
    validateDropSpec(parsed, config.numLayers, `variant ${name}`);
    return { name, spec: parsed };
  });
}
