/**
 * Small ONNX graphs that move KV inside device memory, so a device-resident cache never makes a round
 * trip through JS. They run as sessions of their own on the model's execution provider, with every
 * K/V output left on the device (`preferredOutputLocation: 'gpu-buffer'`). Each graph covers every
 * kept attention layer of one KvLayout in a single run (one dispatch per step, not one per layer).
 *
 *   append:    cache_<l> [R, kvH, P, D] ← new_<l> [B, S, kvH·D] at (rows[b], h, positions[b] + s)
 *              ScatterND; the model graph's new K/V rows stay on the device, only the indices go up
 *   regather:  cache_<l> [R, kvH, P, D] → [R', kvH, P', D]: Gather rows by index (a row leaving, rows
 *              reordered, a prefix copied into another row), then Pad/crop the token axis to P'
 *   zeros:     an arena's first buffers, [R, kvH, P, D] of zeros made on the device from a shape
 *
 * Tensor names per kept layer l: key_<l>, value_<l> in and out (inputs `past_*`, outputs `next_*`).
 */
import type { NodeProto, TensorProto, ValueInfoProto } from '../engine/graph/onnx-helpers.ts';
import {
  ElemType,
  encodeModel,
  floatTensor,
  graph,
  int64Tensor,
  intAttr,
  node,
  tensorInfo,
} from '../engine/graph/onnx-helpers.ts';
import type { KvLayout } from './kv-layout.ts';

export const DEVICE_KV_INPUT = {
  rows: 'rows',
  scatterIndices: 'scatter_indices',
  tokenPads: 'token_pads',
  shape: 'shape',
  past: (kind: KvKind, layer: number): string => `past_${kind}_${layer}`,
  new: (kind: KvKind, layer: number): string => `new_${kind}_${layer}`,
} as const;

export const DEVICE_KV_OUTPUT = {
  next: (kind: KvKind, layer: number): string => `next_${kind}_${layer}`,
  zeros: 'zeros',
} as const;

export type KvKind = 'key' | 'value';
export const KV_KINDS: readonly KvKind[] = ['key', 'value'];

/** The cache's element type: float32, or float16 with `--kv-dtype fp16`. */
const kvElem = (layout: KvLayout): ElemType => (layout.dtype === 'fp16' ? ElemType.float16 : ElemType.float);

const cacheInfo = (name: string, layout: KvLayout) =>
  tensorInfo(name, kvElem(layout), ['rows', 'kv_heads', 'tokens', 'head_dim']);

function forEachCache(layout: KvLayout, each: (kind: KvKind, layer: number) => void): void {
  for (const layer of layout.keptLayers) for (const kind of KV_KINDS) each(kind, layer);
}

/** Output names of a graph that writes every kept layer's K and V: what to mark 'gpu-buffer'. */
export function cacheOutputNames(layout: KvLayout): string[] {
  const names: string[] = [];
  forEachCache(layout, (kind, layer) => names.push(DEVICE_KV_OUTPUT.next(kind, layer)));
  return names;
}

/**
 * append: new rows [B, S, kvH·D] → [B, kvH, S, D] → ScatterND into the cache at host-built indices
 * [B, kvH, S, 3] of (arena row, head, position) (appendIndices). ScatterND copies the cache it
 * updates (ONNX has no in-place op): a device-side copy, no host traffic.
 */
export function appendGraph(layout: KvLayout): Uint8Array {
  const { numKvHeads, headDim } = layout;
  const splitHeads = 'split_heads_shape';
  const nodes: NodeProto[] = [];
  const inputs: ValueInfoProto[] = [
    tensorInfo(DEVICE_KV_INPUT.scatterIndices, ElemType.int64, ['batch', numKvHeads, 'seq', 3]),
  ];
  const outputs: ValueInfoProto[] = [];
  forEachCache(layout, (kind, layer) => {
    const past = DEVICE_KV_INPUT.past(kind, layer);
    const fresh = DEVICE_KV_INPUT.new(kind, layer);
    const p = `${kind}_${layer}`;
    inputs.push(
      cacheInfo(past, layout),
      tensorInfo(fresh, kvElem(layout), ['batch', 'seq', numKvHeads * headDim]),
    );
    outputs.push(cacheInfo(DEVICE_KV_OUTPUT.next(kind, layer), layout));
    nodes.push(
      node({ name: `${p}.split`, op: 'Reshape', inputs: [fresh, splitHeads], outputs: [`${p}.bshd`] }),
      node({
        name: `${p}.to_bhsd`,
        op: 'Transpose',
        inputs: [`${p}.bshd`],
        outputs: [`${p}.bhsd`],
        attributes: [intsAttr('perm', [0, 2, 1, 3])],
      }),
      node({
        name: `${p}.scatter`,
        op: 'ScatterND',
        inputs: [past, DEVICE_KV_INPUT.scatterIndices, `${p}.bhsd`],
        outputs: [DEVICE_KV_OUTPUT.next(kind, layer)],
      }),
    );
  });
  const initializers: TensorProto[] = [int64Tensor(splitHeads, [4], [0, 0, numKvHeads, headDim])];
  return encodeModel(graph({ name: 'kv_append', nodes, inputs, outputs, initializers }));
}

/**
 * ScatterND indices [B, kvH, S, 3]: batch row b's token s goes to (rows[b], h, positions[b] + s).
 * B·kvH·S·24 bytes go up per append, whatever the context length.
 */
export function appendIndices(
  numKvHeads: number,
  rows: readonly number[],
  positions: readonly number[],
  seqLen: number,
): BigInt64Array {
  const out = new BigInt64Array(rows.length * numKvHeads * seqLen * 3);
  let i = 0;
  rows.forEach((row, b) => {
    for (let h = 0; h < numKvHeads; h++) {
      for (let s = 0; s < seqLen; s++) {
        out[i++] = BigInt(row);
        out[i++] = BigInt(h);
        out[i++] = BigInt(positions[b]! + s);
      }
    }
  });
  return out;
}

/**
 * regather: Gather(cache, rows, axis 0), then Pad with token_pads [8] (only the token axis's end is
 * ever non-zero; a negative value crops). Row r of the result is row rows[r] of the input, so one
 * graph serves a row leaving (the last row moved into its hole), a row joining (any existing row as
 * filler: its length is 0, GQA never reads it) and a prefix copied into another row.
 */
export function regatherGraph(layout: KvLayout): Uint8Array {
  const nodes: NodeProto[] = [];
  const inputs: ValueInfoProto[] = [
    tensorInfo(DEVICE_KV_INPUT.rows, ElemType.int64, ['new_rows']),
    tensorInfo(DEVICE_KV_INPUT.tokenPads, ElemType.int64, [8]),
  ];
  const outputs: ValueInfoProto[] = [];
  forEachCache(layout, (kind, layer) => {
    const past = DEVICE_KV_INPUT.past(kind, layer);
    const p = `${kind}_${layer}`;
    inputs.push(cacheInfo(past, layout));
    outputs.push(cacheInfo(DEVICE_KV_OUTPUT.next(kind, layer), layout));
    nodes.push(
      node({
        name: `${p}.gather_rows`,
        op: 'Gather',
        inputs: [past, DEVICE_KV_INPUT.rows],
        outputs: [`${p}.rows`],
        attributes: [intAttr('axis', 0)],
      }),
      node({
        name: `${p}.pad_tokens`,
        op: 'Pad',
        inputs: [`${p}.rows`, DEVICE_KV_INPUT.tokenPads],
        outputs: [DEVICE_KV_OUTPUT.next(kind, layer)],
      }),
    );
  });
  return encodeModel(graph({ name: 'kv_regather', nodes, inputs, outputs }));
}

/** Pads [8] for Pad on [R, kvH, P, D]: grow (or, negative, crop) the token axis at its end. */
export function tokenPads(fromTokens: number, toTokens: number): BigInt64Array {
  return BigInt64Array.from([0, 0, 0, 0, 0, 0, toTokens - fromTokens, 0], BigInt);
}

/** zeros: Expand of a scalar zero to `shape` [4], made on the device (only 32 bytes of shape go up). */
export function zerosGraph(layout: KvLayout): Uint8Array {
  const zero = 'zero';
  return encodeModel(
    graph({
      name: 'kv_zeros',
      nodes: [
        node({ name: 'expand', op: 'Expand', inputs: [zero, DEVICE_KV_INPUT.shape], outputs: ['zeros'] }),
      ],
      inputs: [tensorInfo(DEVICE_KV_INPUT.shape, ElemType.int64, [4])],
      outputs: [cacheInfo(DEVICE_KV_OUTPUT.zeros, layout)],
      initializers: [
        layout.dtype === 'fp16'
          ? { name: zero, dims: [1, 1, 1, 1], dataType: ElemType.float16, rawData: new Uint8Array(2) }
          : floatTensor(zero, [1, 1, 1, 1], new Float32Array(1)),
      ],
    }),
  );
}

function intsAttr(name: string, ints: number[]) {
  // AttributeProto type 7 = INTS; onnx-helpers has no helper for it and this is its only user.
  return { name, type: 7, ints };
}

/** Output name of a resident copy of graph input `name`. */
export const residentName = (name: string): string => `resident_${name}`;

/**
 * Identity per float input: run once with host tensors and 'gpu-buffer' outputs, it leaves device
 * copies that later runs take as inputs — for feeds that are constant for a sequence's life (a
 * mask's emulation biases and low-rank maps), which would otherwise go up again every step.
 */
export function residentCopyGraph(inputs: readonly { name: string; rank: number }[]): Uint8Array {
  return encodeModel(
    graph({
      name: 'resident_copy',
      nodes: inputs.map(({ name }) =>
        node({ name: `copy.${name}`, op: 'Identity', inputs: [name], outputs: [residentName(name)] }),
      ),
      inputs: inputs.map(({ name, rank }) => tensorInfo(name, ElemType.float, Array(rank).fill(null))),
      outputs: inputs.map(({ name, rank }) =>
        tensorInfo(residentName(name), ElemType.float, Array(rank).fill(null)),
      ),
    }),
  );
}
