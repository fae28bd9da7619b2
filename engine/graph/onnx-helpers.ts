/**
 * Constructors for ONNX protobuf messages. onnx-proto's types are loose (every field optional, Long
 * or number); this file is the only place that touches them, so the graph code reads as ops.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export type ValueInfoProto = onnxProto.onnx.IValueInfoProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type AttributeProto = onnxProto.onnx.IAttributeProto;

/** TensorProto.DataType values used here. */
export const ElemType = { float: 1, int32: 6, int64: 7, bool: 9, float16: 10 } as const;
export type ElemType = (typeof ElemType)[keyof typeof ElemType];

/** AttributeProto.AttributeType values used here. */
const AttrType = { float: 1, int: 2, tensor: 4, graph: 5 } as const;

export const MS_DOMAIN = 'com.microsoft';

export const intAttr = (name: string, i: number): AttributeProto => ({ name, type: AttrType.int, i });
export const floatAttr = (name: string, f: number): AttributeProto => ({ name, type: AttrType.float, f });
export const graphAttr = (name: string, g: GraphProto): AttributeProto => ({ name, type: AttrType.graph, g });
export const tensorAttr = (name: string, t: TensorProto): AttributeProto => ({
  name,
  type: AttrType.tensor,
  t,
});

export interface NodeSpec {
  /** Module path, e.g. `layers.3.attn.q_proj`: leads from Netron back to the code. */
  name: string;
  op: string;
  inputs: string[];
  outputs: string[];
  attributes?: AttributeProto[];
  domain?: string;
}

export function node(spec: NodeSpec): NodeProto {
  return {
    name: spec.name,
    opType: spec.op,
    input: spec.inputs,
    output: spec.outputs,
    attribute: spec.attributes ?? [],
    domain: spec.domain ?? '',
  };
}

/** A float32 initializer; the bytes are copied when the model is encoded. */
export function floatTensor(name: string, dims: number[], data: Float32Array): TensorProto {
  if (data.length !== dims.reduce((a, b) => a * b, 1)) {
    throw new RangeError(`${name}: ${data.length} values do not fill dims [${dims.join(', ')}]`);
  }
  return {
    name,
    dims,
    dataType: ElemType.float,
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  };
}

export function int64Tensor(name: string, dims: number[], values: readonly number[]): TensorProto {
  const data = BigInt64Array.from(values, (v) => BigInt(v));
  return { name, dims, dataType: ElemType.int64, rawData: new Uint8Array(data.buffer) };
}

/** A tensor with no elements (one dim is 0), e.g. the empty new K/V of a dropped layer. */
export function emptyFloatTensor(name: string, dims: number[]): TensorProto {
  return { name, dims, dataType: ElemType.float, rawData: new Uint8Array(0) };
}

/** Dims may be numbers, symbolic names, or null for an unknown dim; shape null = unknown rank. */
export function tensorInfo(
  name: string,
  elemType: ElemType,
  shape: (number | string | null)[] | null,
): ValueInfoProto {
  const tensorType: onnxProto.onnx.TypeProto.ITensor = { elemType };
  if (shape) {
    tensorType.shape = {
      dim: shape.map((d) =>
        typeof d === 'number' ? { dimValue: d } : typeof d === 'string' ? { dimParam: d } : {},
      ),
    };
  }
  return { name, type: { tensorType } };
}

export interface GraphSpec {
  name: string;
  nodes: NodeProto[];
  inputs?: ValueInfoProto[];
  outputs: ValueInfoProto[];
  initializers?: TensorProto[];
}

export function graph(spec: GraphSpec): GraphProto {
  return {
    name: spec.name,
    node: spec.nodes,
    input: spec.inputs ?? [],
    output: spec.outputs,
    initializer: spec.initializers ?? [],
  };
}

/** Bytes of one initializer kept outside the protobuf, fed to onnxruntime by name at session creation. */
export interface ExternalWeightFile {
  path: string;
  data: Uint8Array;
}

/** TensorProto.DataLocation.EXTERNAL */
const EXTERNAL_LOCATION = 1;

/**
 * Moves the bytes of every initializer of at least minBytes out of the graph: the tensor keeps its
 * name, type and shape and points at an in-memory "file" of its own. Protobuf caps a message at 2 GB,
 * so weights of any real-sized model cannot be inlined; one file per tensor also avoids concatenating
 * the weights into yet another copy.
 */
export function externalizeInitializers(mainGraph: GraphProto, minBytes = 1024): ExternalWeightFile[] {
  const files: ExternalWeightFile[] = [];
  for (const tensor of mainGraph.initializer ?? []) {
    const data = tensor.rawData;
    if (!data || data.byteLength < minBytes) continue;
    const path = `weight-${files.length}.bin`;
    files.push({ path, data });
    tensor.rawData = new Uint8Array(0);
    tensor.dataLocation = EXTERNAL_LOCATION;
    tensor.externalData = [
      { key: 'location', value: path },
      { key: 'offset', value: '0' },
      { key: 'length', value: String(data.byteLength) },
    ];
  }
  return files;
}

/**
 * Points every initializer whose bytes are a view of `image` at the same bytes in the checkpoint
 * file `fileName` (a name inside the folder given to the session), whatever its size. onnxruntime
 * maps that file rather than copying the weights; the other initializers stay inline (onnxruntime
 * takes in-memory external data or file external data, not both). Returns how many were pointed.
 */
export function pointInitializersAtFile(mainGraph: GraphProto, image: ArrayBuffer, fileName: string): number {
  let count = 0;
  for (const tensor of mainGraph.initializer ?? []) {
    const data = tensor.rawData;
    if (!data || data.buffer !== image) continue;
    tensor.rawData = new Uint8Array(0);
    tensor.dataLocation = EXTERNAL_LOCATION;
    tensor.externalData = [
      { key: 'location', value: fileName },
      { key: 'offset', value: String(data.byteOffset) },
      { key: 'length', value: String(data.byteLength) },
    ];
    count++;
  }
  return count;
}

/** Serializes a ModelProto: IR 8, default opset 17 plus com.microsoft 1. */
export function encodeModel(mainGraph: GraphProto): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'dropserve',
    opsetImport: [
      { domain: '', version: 17 },
      { domain: MS_DOMAIN, version: 1 },
    ],
    graph: mainGraph,
  });
  return onnx.ModelProto.encode(model).finish();
}
