import { DropserveError } from '../../engine/errors.ts';
import type { SublayerEmulation } from '../../engine/graph/io.ts';
import type { DropSpec } from '../../engine/plan/plan.ts';

/** How a sublayer goes into a DeciLM export. `matrix` is W [dim, dim] of y = W·norm(x). */
export type SublayerExport = { form: 'full' } | { form: 'no_op' } | { form: 'linear'; matrix: Float32Array };

export interface ExportForms {
  attention: SublayerExport[];
  mlp: SublayerExport[];
  /** Human-readable notes on emulations left out under --drop-emulation. */
  dropped: string[];
}

/**
 * Decides each sublayer's DeciLM form. A low-rank emulation without a bias is exactly a linear map
 * (W = (down·up)ᵀ). A bias, alone or beside a low-rank part, has no DeciLM form (its linear layers
 * carry no bias): refused unless dropEmulation, which turns the sublayer into a plain no_op.
 */
export function exportForms(
  spec: DropSpec,
  numLayers: number,
  dim: number,
  dropEmulation: boolean,
): ExportForms {
  const dropped: string[] = [];
  const formsOf = (
    kind: 'attention' | 'mlp',
    drops: number[],
    emulations: readonly (SublayerEmulation | null)[] | undefined,
  ): SublayerExport[] =>
    Array.from({ length: numLayers }, (_, l): SublayerExport => {
      if (!drops.includes(l)) return { form: 'full' };
      const emulation = emulations?.[l];
      if (!emulation) return { form: 'no_op' };
      const hasBias = emulation.bias?.some((v) => v !== 0) === true;
      if (emulation.kind === 'lowrank' && !hasBias) {
        return { form: 'linear', matrix: lowRankAsMatrix(emulation.down, emulation.up, emulation.rank, dim) };
      }
      const what = emulation.kind === 'bias' ? 'a bias emulation' : 'a low-rank emulation with a bias';
      if (!dropEmulation) {
        throw new DropserveError(
          'DS_UNSUPPORTED',
          `prune export --format deci: ${kind} ${l} has ${what}, which DeciLM cannot express ` +
            '(replace_with_linear is a bias-free linear map); pass --drop-emulation to export that sublayer as no_op',
          { param: 'drop-emulation' },
        );
      }
      dropped.push(`${kind} ${l}: ${what} left out (no_op)`);
      return { form: 'no_op' };
    });
  return {
    attention: formsOf('attention', spec.dropAttention, spec.emulation?.attention),
    mlp: formsOf('mlp', spec.dropMlp, spec.emulation?.mlp),
    dropped,
  };
}

/** dropserve adds norm(x)·down·up (row vector times [dim,r]·[r,dim]); nn.Linear computes W·norm(x). */
function lowRankAsMatrix(down: Float32Array, up: Float32Array, rank: number, dim: number): Float32Array {
  const w = new Float32Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let o = 0; o < dim; o++) {
      let sum = 0;
      for (let r = 0; r < rank; r++) sum += down[i * rank + r]! * up[r * dim + o]!;
      w[o * dim + i] = sum;
    }
  }
  return w;
}
