import { GRAPH_INPUT, GRAPH_OUTPUT } from './io.ts';
import {
  ElemType,
  type GraphProto,
  intAttr,
  type NodeProto,
  node,
  type ValueInfoProto,
} from './onnx-helpers.ts';

/** Element type of the KV cache the graph takes and gives: `--kv-dtype`. */
export type KvDtype = 'fp32' | 'fp16';

/**
 * Makes the graph's KV interface fp16 while everything inside stays fp32: each past input becomes
 * float16 and is Cast up before attention reads it, each new K/V output is Cast down. The cache then
 * takes half the device memory per token; the cost is a Cast of the past per step, a device-side copy
 * like the cache update's own. Names the graph's nodes read (in If branches too) are renamed.
 */
export function withFp16Kv(g: GraphProto, numLayers: number): GraphProto {
  const renamed = new Map<string, string>();
  const casts: NodeProto[] = [];
  for (const info of g.input ?? []) {
    const name = info.name ?? '';
    if (!isPastName(name, numLayers)) continue;
    setElemType(info, ElemType.float16);
    renamed.set(name, `${name}.f32`);
    casts.push(
      node({
        name: `${name}.cast_up`,
        op: 'Cast',
        inputs: [name],
        outputs: [`${name}.f32`],
        attributes: [intAttr('to', ElemType.float)],
      }),
    );
  }
  const outputCasts: NodeProto[] = [];
  const producedAs = new Map<string, string>();
  for (const info of g.output ?? []) {
    const name = info.name ?? '';
    if (!isNewKvName(name, numLayers)) continue;
    setElemType(info, ElemType.float16);
    producedAs.set(name, `${name}.f32`);
    outputCasts.push(
      node({
        name: `${name}.cast_down`,
        op: 'Cast',
        inputs: [`${name}.f32`],
        outputs: [name],
        attributes: [intAttr('to', ElemType.float16)],
      }),
    );
  }
  for (const n of g.node ?? []) {
    renameInputs(n, renamed);
    n.output = (n.output ?? []).map((o) => producedAs.get(o) ?? o);
  }
  return { ...g, node: [...casts, ...(g.node ?? []), ...outputCasts] };
}

/** Renames what a node reads, including outer-scope names read inside its subgraphs (If branches). */
function renameInputs(n: NodeProto, renamed: ReadonlyMap<string, string>): void {
  n.input = (n.input ?? []).map((i) => renamed.get(i) ?? i);
  for (const attr of n.attribute ?? []) {
    if (attr.g) for (const inner of attr.g.node ?? []) renameInputs(inner, renamed);
    for (const sub of attr.graphs ?? []) for (const inner of sub.node ?? []) renameInputs(inner, renamed);
  }
}

function setElemType(info: ValueInfoProto, elemType: number): void {
  if (info.type?.tensorType) info.type.tensorType.elemType = elemType;
}

function isPastName(name: string, numLayers: number): boolean {
  for (let l = 0; l < numLayers; l++) {
    if (name === GRAPH_INPUT.pastKey(l) || name === GRAPH_INPUT.pastValue(l)) return true;
  }
  return false;
}

function isNewKvName(name: string, numLayers: number): boolean {
  for (let l = 0; l < numLayers; l++) {
    if (name === GRAPH_OUTPUT.newKey(l) || name === GRAPH_OUTPUT.newValue(l)) return true;
  }
  return false;
}
