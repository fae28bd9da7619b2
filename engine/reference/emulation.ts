import type { SublayerEmulation } from '../graph/io.ts';
import { multiplyRowMajor, residual, rmsNorm } from './ops.ts';

/**
 * What replaces a dropped sublayer (engine/graph/io.ts): plain drop is x; bias is x + b; low-rank
 * is x + b + (rmsNorm(x, the sublayer's own norm weight) · down) · up.
 */
export function emulateSublayer(
  x: Float64Array, // [dim]
  emulation: SublayerEmulation | null,
  normWeight: Float32Array, // [dim]
  eps: number,
): Float64Array {
  if (!emulation) return x;
  const withBias = emulation.bias ? residual(x, emulation.bias) : x;
  if (emulation.kind === 'bias') return withBias;
  const dim = x.length;
  const projected = multiplyRowMajor(rmsNorm(x, normWeight, eps), emulation.down, emulation.rank); // [r]
  return residual(withBias, multiplyRowMajor(projected, emulation.up, dim));
}
