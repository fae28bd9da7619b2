/** Naming of the 2L sublayers a model can drop, and their place in the residual stream. */
import type { DropSpec } from '../engine/plan/plan.ts';

export type SublayerKind = 'attention' | 'mlp';
export const SUBLAYER_KINDS: readonly SublayerKind[] = ['attention', 'mlp'];

export interface Sublayer {
  kind: SublayerKind;
  layer: number;
}

/** "attn 3" / "mlp 2", as tables and logs show them. */
export function sublayerName(s: Sublayer): string {
  return `${s.kind === 'attention' ? 'attn' : 'mlp'} ${s.layer}`;
}

/** Every sublayer of the given kinds, attention before MLP within a layer. */
export function sublayersOf(numLayers: number, kinds: readonly SublayerKind[] = SUBLAYER_KINDS): Sublayer[] {
  const out: Sublayer[] = [];
  for (let layer = 0; layer < numLayers; layer++) {
    for (const kind of SUBLAYER_KINDS) if (kinds.includes(kind)) out.push({ kind, layer });
  }
  return out;
}

/**
 * Index of the residual stream entering / leaving a sublayer in the graph's hidden_<k> outputs
 * (engine/graph/io.ts): attention l maps hidden_2l → hidden_2l+1, MLP l hidden_2l+1 → hidden_2l+2.
 */
export function hiddenIndexAfter(s: Sublayer): number {
  return s.kind === 'attention' ? 2 * s.layer + 1 : 2 * s.layer + 2;
}

/** A drop spec that removes `removed` on top of `base` (indices sorted, no duplicates). */
export function withRemoved(base: DropSpec, removed: readonly Sublayer[]): DropSpec {
  const attention = new Set(base.dropAttention);
  const mlp = new Set(base.dropMlp);
  for (const s of removed) (s.kind === 'attention' ? attention : mlp).add(s.layer);
  const sorted = (set: Set<number>) => [...set].sort((a, b) => a - b);
  return { dropAttention: sorted(attention), dropMlp: sorted(mlp), emulation: base.emulation };
}

/** The sublayers a spec drops, attention first. */
export function removedSublayers(spec: DropSpec): Sublayer[] {
  return [
    ...spec.dropAttention.map((layer) => ({ kind: 'attention' as const, layer })),
    ...spec.dropMlp.map((layer) => ({ kind: 'mlp' as const, layer })),
  ];
}

/** Per-layer scores of both kinds; lower = more redundant, for every metric. */
export interface SublayerScores {
  attention: number[]; // [L]
  mlp: number[]; // [L]
}

export function scoreOf(scores: SublayerScores, s: Sublayer): number {
  return scores[s.kind][s.layer]!;
}
