/**
 * Packs a mask's emulation into the graph's emulation inputs (engine/graph/io.ts):
 *   <kind>_lowrank bool [L], <kind>_emul_bias float [L, dim],
 *   <kind>_emul_down float [L, dim, R], <kind>_emul_up float [L, R, dim]
 * with R = the largest rank of that kind, smaller ranks zero-padded (zero columns of down and zero
 * rows of up add nothing), and R = 0 when no layer of that kind is low-rank.
 */
import ort from 'onnxruntime-node';
import type { ModelConfig } from '../model/config.ts';
import type { Emulation, SublayerEmulation } from './io.ts';
import { GRAPH_INPUT } from './io.ts';

export interface PackedTensor<T extends Float32Array | Uint8Array> {
  data: T;
  dims: number[];
}

export interface PackedSublayerEmulation {
  isLowRank: PackedTensor<Uint8Array>; // bool [L]
  bias: PackedTensor<Float32Array>; // [L, dim]
  down: PackedTensor<Float32Array>; // [L, dim, R]
  up: PackedTensor<Float32Array>; // [L, R, dim]
}

export function packSublayerEmulation(
  config: ModelConfig,
  perLayer: readonly (SublayerEmulation | null)[] | undefined,
): PackedSublayerEmulation {
  const { numLayers: L, dim } = config;
  const entries = perLayer ?? [];
  if (entries.length !== 0 && entries.length !== L) {
    throw new RangeError(`emulation has ${entries.length} layers, the model ${L}`);
  }
  const rank = Math.max(0, ...entries.map((e) => (e?.kind === 'lowrank' ? e.rank : 0)));
  const isLowRank = new Uint8Array(L);
  const bias = new Float32Array(L * dim);
  const down = new Float32Array(L * dim * rank);
  const up = new Float32Array(L * rank * dim);
  entries.forEach((e, l) => {
    if (!e) return;
    if (e.bias) bias.set(checkLength(e.bias, dim, 'bias'), l * dim);
    if (e.kind !== 'lowrank') return;
    isLowRank[l] = 1;
    checkLength(e.down, dim * e.rank, 'down');
    checkLength(e.up, e.rank * dim, 'up');
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j < e.rank; j++) down[(l * dim + i) * rank + j] = e.down[i * e.rank + j]!;
    }
    up.set(e.up, l * rank * dim); // row j of up lands at row j of the padded [R, dim] block
  });
  return {
    isLowRank: { data: isLowRank, dims: [L] },
    bias: { data: bias, dims: [L, dim] },
    down: { data: down, dims: [L, dim, rank] },
    up: { data: up, dims: [L, rank, dim] },
  };
}

function checkLength(values: Float32Array, expected: number, what: string): Float32Array {
  if (values.length !== expected)
    throw new RangeError(`emulation ${what} has ${values.length} values, expected ${expected}`);
  return values;
}

/** Graph input name → tensor, for both sublayer kinds: the emulation feeds of one mask. */
export function emulationFeeds(
  config: ModelConfig,
  emulation: Emulation | undefined,
): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  const kinds = [
    [
      emulation?.attention,
      GRAPH_INPUT.attnLowRank,
      GRAPH_INPUT.attnEmulBias,
      GRAPH_INPUT.attnEmulDown,
      GRAPH_INPUT.attnEmulUp,
    ],
    [
      emulation?.mlp,
      GRAPH_INPUT.mlpLowRank,
      GRAPH_INPUT.mlpEmulBias,
      GRAPH_INPUT.mlpEmulDown,
      GRAPH_INPUT.mlpEmulUp,
    ],
  ] as const;
  for (const [perLayer, lowRankName, biasName, downName, upName] of kinds) {
    const packed = packSublayerEmulation(config, perLayer);
    feeds[lowRankName] = new ort.Tensor('bool', packed.isLowRank.data, packed.isLowRank.dims);
    feeds[biasName] = new ort.Tensor('float32', packed.bias.data, packed.bias.dims);
    feeds[downName] = new ort.Tensor('float32', packed.down.data, packed.down.dims);
    feeds[upName] = new ort.Tensor('float32', packed.up.data, packed.up.dims);
  }
  return feeds;
}
