import type { Emulation } from '../graph/io.ts';
import type { DropSpec } from './plan.ts';

/**
 * Adds the plan a loaded export carries (engine/model/loaded-model.ts `builtInPlan`) to a variant's
 * own spec: the union of the drops, and the export's linear replacements wherever the variant has
 * none of its own. Without a built-in plan the spec is returned as it is.
 */
export function withBuiltInPlan(spec: DropSpec, builtIn: DropSpec | undefined): DropSpec {
  if (!builtIn) return spec;
  const union = (a: number[], b: number[]): number[] => [...new Set([...a, ...b])].sort((x, y) => x - y);
  const merged: DropSpec = {
    dropAttention: union(builtIn.dropAttention, spec.dropAttention),
    dropMlp: union(builtIn.dropMlp, spec.dropMlp),
  };
  const emulation = mergeEmulation(builtIn.emulation, spec.emulation);
  if (emulation) merged.emulation = emulation;
  return merged;
}

function mergeEmulation(builtIn?: Emulation, own?: Emulation): Emulation | undefined {
  if (!builtIn) return own;
  if (!own) return builtIn;
  // A sublayer the export replaced has no weights left: its replacement wins over a variant's.
  return {
    attention: builtIn.attention.map((e, l) => e ?? own.attention[l] ?? null),
    mlp: builtIn.mlp.map((e, l) => e ?? own.mlp[l] ?? null),
  };
}
