import fs from 'node:fs';
import path from 'node:path';
import type { DropSpec } from '../plan/plan.ts';
import { LLAMA3_SPLIT } from '../tokenizer/gguf-bpe-tokenizer.ts';
import { GgufTokenType, ggufPieceText } from '../tokenizer/gguf-tokenizer.ts';
import { HfTokenizer } from '../tokenizer/hf-tokenizer.ts';
import { Llama2cTokenizer } from '../tokenizer/llama2c-tokenizer.ts';
import type { ModelConfig } from './config.ts';
import {
  encodeF16,
  encodeQ4_0,
  encodeQ8_0,
  GGMLQuantizationType,
  ggmlByteSize,
  ggmlLayout,
} from './gguf-tensors.ts';
import { readJsonObject } from './json-file.ts';
import type { LoadedModel } from './loaded-model.ts';

/**
 * A GGUF (version 3) writer: metadata key/values, tensor infos, aligned tensor data. Used to make
 * test fixtures and by `dropserve convert --to gguf`; written to the GGUF specification so that
 * llama.cpp reads what it writes.
 */

export type GgufValue =
  | { type: 'string'; value: string }
  | { type: 'u32'; value: number }
  | { type: 'i32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string[]'; value: string[] }
  | { type: 'f32[]'; value: number[] }
  | { type: 'i32[]'; value: number[] };

export interface GgufTensorToWrite {
  name: string;
  /** GGUF order: innermost first (a [rows, cols] matrix is [cols, rows]). */
  dims: number[];
  type: GGMLQuantizationType;
  data: Uint8Array;
}

const ALIGNMENT = 32;
/** GGUF value type ids. */
const VT = { u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9 } as const;

class ByteSink {
  readonly chunks: Uint8Array[] = [];
  length = 0;
  push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  padTo(alignment: number): void {
    const pad = (alignment - (this.length % alignment)) % alignment;
    if (pad > 0) this.push(new Uint8Array(pad));
  }
}

function writeValue(sink: ByteSink, v: GgufValue): void {
  switch (v.type) {
    case 'string':
      sink.u32(VT.string);
      sink.string(v.value);
      return;
    case 'u32':
      sink.u32(VT.u32);
      sink.u32(v.value);
      return;
    case 'i32':
      sink.u32(VT.i32);
      sink.i32(v.value);
      return;
    case 'f32':
      sink.u32(VT.f32);
      sink.f32(v.value);
      return;
    case 'bool':
      sink.u32(VT.bool);
      sink.push(Uint8Array.of(v.value ? 1 : 0));
      return;
    case 'string[]':
      sink.u32(VT.array);
      sink.u32(VT.string);
      sink.u64(v.value.length);
      for (const s of v.value) sink.string(s);
      return;
    case 'f32[]':
      sink.u32(VT.array);
      sink.u32(VT.f32);
      sink.u64(v.value.length);
      for (const x of v.value) sink.f32(x);
      return;
    case 'i32[]':
      sink.u32(VT.array);
      sink.u32(VT.i32);
      sink.u64(v.value.length);
      for (const x of v.value) sink.i32(x);
      return;
  }
}

export function writeGgufFile(
  file: string,
  metadata: Record<string, GgufValue>,
  tensors: GgufTensorToWrite[],
): void {
  const header = new ByteSink();
  header.push(Buffer.from('GGUF', 'latin1'));
  header.u32(3);
  header.u64(tensors.length);
  header.u64(Object.keys(metadata).length);
  for (const [key, value] of Object.entries(metadata)) {
    header.string(key);
    writeValue(header, value);
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    const count = t.dims.reduce((a, b) => a * b, 1);
    const size = ggmlByteSize(t.type, count);
    if (size !== undefined && size !== t.data.length) {
      throw new RangeError(`${t.name}: ${t.data.length} bytes do not hold ${count} values of type ${t.type}`);
    }
    offsets.push(offset);
    offset += t.data.length;
    offset += (ALIGNMENT - (offset % ALIGNMENT)) % ALIGNMENT;
  }
  tensors.forEach((t, i) => {
    header.string(t.name);
    header.u32(t.dims.length);
    for (const d of t.dims) header.u64(d);
    header.u32(t.type);
    header.u64(offsets[i]!);
  });
  header.padTo(ALIGNMENT);
  const fd = fs.openSync(file, 'w');
  try {
    for (const chunk of header.chunks) fs.writeSync(fd, chunk);
    let written = 0;
    tensors.forEach((t, i) => {
      if (offsets[i]! > written) fs.writeSync(fd, new Uint8Array(offsets[i]! - written));
      fs.writeSync(fd, t.data);
      written = offsets[i]! + t.data.length;
    });
  } finally {
    fs.closeSync(fd);
  }
}

/** Weight formats a model can be written in (norms always stay F32, as llama.cpp keeps them). */
export const GGUF_WRITE_TYPES = ['f32', 'f16', 'q8_0', 'q4_0'] as const;
export type GgufWriteType = (typeof GGUF_WRITE_TYPES)[number];

const TYPE_IDS: Record<GgufWriteType, GGMLQuantizationType> = {
  f32: GGMLQuantizationType.F32,
  f16: GGMLQuantizationType.F16,
  q8_0: GGMLQuantizationType.Q8_0,
  q4_0: GGMLQuantizationType.Q4_0,
};

/** llama.cpp's general.file_type (llama_ftype) for each whole-file type. */
const FILE_TYPES: Record<GgufWriteType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7 };

function encode(values: Float32Array, type: GGMLQuantizationType): Uint8Array {
  switch (type) {
    case GGMLQuantizationType.F32:
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case GGMLQuantizationType.F16:
      return encodeF16(values);
    case GGMLQuantizationType.Q8_0:
      return encodeQ8_0(values);
    case GGMLQuantizationType.Q4_0:
      return encodeQ4_0(values);
    default:
      throw new RangeError(`no encoder for type ${type}`);
  }
}

/**
 * HF checkpoints rotate halves of each head; GGUF llama tensors are stored for llama.cpp's
 * adjacent-pair RoPE, so llama.cpp's converter reorders the rows of Q and K: within each head,
 * row j·(d/2) + i moves to 2i + j. The same reordering is applied here.
 */
export function interleaveRopeRows(w: Float32Array, heads: number, headDim: number): Float32Array {
  const cols = w.length / (heads * headDim);
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const from = (h * headDim + j * half + i) * cols;
        const to = (h * headDim + 2 * i + j) * cols;
        out.set(w.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

/** The vocabulary of a loaded model's tokenizer as GGUF "llama" tokenizer metadata. */
function tokenizerMetadata(model: LoadedModel): Record<string, GgufValue> {
  const { tokenizer, config } = model;
  let vocabulary: Record<string, GgufValue>;
  if (tokenizer instanceof Llama2cTokenizer) {
    vocabulary = sentencePieceMetadata(llama2cVocabularyAsGguf(tokenizer));
  } else if (tokenizer instanceof HfTokenizer && model.source.path) {
    vocabulary = hfVocabularyMetadata(model.source.path);
  } else {
    throw new RangeError(
      `cannot write the tokenizer of ${model.source.description} as a GGUF vocabulary (need a llama2.c tokenizer or an HF BPE tokenizer.json)`,
    );
  }
  return {
    ...vocabulary,
    'tokenizer.ggml.bos_token_id': { type: 'u32', value: config.bosTokenId },
    'tokenizer.ggml.eos_token_id': { type: 'u32', value: tokenizer.eosTokenIds[0] ?? 2 },
    'tokenizer.ggml.unknown_token_id': { type: 'u32', value: 0 },
    'tokenizer.ggml.add_bos_token': {
      type: 'bool',
      value:
        tokenizer instanceof HfTokenizer || tokenizer instanceof Llama2cTokenizer ? tokenizer.addsBos : true,
    },
    // llama2.c stories end at BOS, not EOS (run.c stops there): llama.cpp stops at an EOT id too.
    ...(config.eosTokenIds.includes(config.bosTokenId)
      ? { 'tokenizer.ggml.eot_token_id': { type: 'u32', value: config.bosTokenId } as GgufValue }
      : {}),
    ...(tokenizer.chatTemplate !== undefined
      ? { 'tokenizer.chat_template': { type: 'string', value: tokenizer.chatTemplate } as GgufValue }
      : {}),
  };
}

function sentencePieceMetadata(v: {
  tokens: string[];
  scores: number[];
  types: number[];
}): Record<string, GgufValue> {
  return {
    'tokenizer.ggml.model': { type: 'string', value: 'llama' },
    'tokenizer.ggml.tokens': { type: 'string[]', value: v.tokens },
    'tokenizer.ggml.scores': { type: 'f32[]', value: v.scores },
    'tokenizer.ggml.token_type': { type: 'i32[]', value: v.types },
  };
}

/** A llama2.c vocabulary as GGUF tokens, scores and token types (what llama.cpp's converter writes). */
export function llama2cVocabularyAsGguf(tokenizer: Llama2cTokenizer): {
  tokens: string[];
  scores: number[];
  types: number[];
} {
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  tokenizer.pieces().forEach((p, id) => {
    const isByte = /^<0x[0-9A-F]{2}>$/.test(p.text);
    const isControl = id === tokenizer.bosTokenId || tokenizer.eosTokenIds.includes(id);
    // llama2.c files spell BOS/EOS "\n<s>\n" / "\n</s>\n"; SentencePiece (and GGUF) "<s>" / "</s>".
    const text = id === 0 ? '<unk>' : isControl ? p.text.trim() : p.text;
    tokens.push(isByte || isControl ? text : ggufPieceText(text));
    scores.push(p.score);
    types.push(
      id === 0
        ? GgufTokenType.unknown
        : isControl
          ? GgufTokenType.control
          : isByte
            ? GgufTokenType.byte
            : GgufTokenType.normal,
    );
  });
  return { tokens, scores, types };
}

/**
 * An HF BPE tokenizer in SentencePiece style (▁ for spaces, byte fallback) as a GGUF "llama"
 * vocabulary: a merged piece scores −(rank of the merge that makes it), every other piece 0, so
 * "merge the best-scoring pair" picks the merges in the order the BPE ranks them.
 */
interface HfTokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  pre_tokenizer?: unknown;
}

function hfVocabularyMetadata(dir: string): Record<string, GgufValue> {
  const json = readJsonObject(path.join(dir, 'tokenizer.json')) as HfTokenizerJson;
  const model = json.model;
  if (model?.type !== 'BPE' || !model.vocab || !model.merges) {
    throw new RangeError(`${dir}/tokenizer.json: not a BPE model with vocab and merges`);
  }
  const preTokenizer = JSON.stringify(json.pre_tokenizer ?? null);
  if (!preTokenizer.includes('"ByteLevel"')) return sentencePieceMetadata(hfBpeAsSentencePiece(json, dir));
  // Byte-level BPE (Llama 3, GPT-2) is GGUF's "gpt2" vocabulary: tokens, merges, the split's name.
  const pre = preTokenizer.includes(JSON.stringify(LLAMA3_SPLIT))
    ? 'llama-bpe'
    : preTokenizer.includes('"use_regex":true') && !preTokenizer.includes('"Split"')
      ? 'gpt-2'
      : undefined;
  if (pre === undefined) {
    throw new RangeError(
      `${dir}/tokenizer.json: a byte-level BPE whose split is neither Llama 3's nor GPT-2's`,
    );
  }
  const { tokens, types } = hfBpeAsSentencePiece(json, dir);
  return {
    'tokenizer.ggml.model': { type: 'string', value: 'gpt2' },
    'tokenizer.ggml.pre': { type: 'string', value: pre },
    'tokenizer.ggml.tokens': { type: 'string[]', value: tokens },
    'tokenizer.ggml.token_type': { type: 'i32[]', value: types },
    'tokenizer.ggml.merges': {
      type: 'string[]',
      value: model.merges.map((m) => (typeof m === 'string' ? m : m.join(' '))),
    },
  };
}

function hfBpeAsSentencePiece(
  json: HfTokenizerJson,
  dir: string,
): { tokens: string[]; scores: number[]; types: number[] } {
  const model = json.model;
  if (!model?.vocab || !model.merges) throw new RangeError(`${dir}/tokenizer.json: no vocab and merges`);

  const size = Math.max(...Object.values(model.vocab), ...(json.added_tokens ?? []).map((t) => t.id)) + 1;
  const tokens = new Array<string>(size).fill('');
  const scores = new Array<number>(size).fill(0);
  const types = new Array<number>(size).fill(GgufTokenType.normal);
  for (const [piece, id] of Object.entries(model.vocab)) tokens[id] = piece;
  model.merges.forEach((merge, rank) => {
    const [a, b] = typeof merge === 'string' ? (merge.split(' ') as [string, string]) : merge;
    const id = model.vocab![a + b];
    if (id !== undefined && scores[id] === 0) scores[id] = -(rank + 1);
  });
  for (const t of json.added_tokens ?? []) {
    tokens[t.id] = t.content;
    types[t.id] =
      t.id === 0 ? GgufTokenType.unknown : t.special ? GgufTokenType.control : GgufTokenType.userDefined;
  }
  tokens.forEach((t, id) => {
    if (/^<0x[0-9A-F]{2}>$/.test(t)) types[id] = GgufTokenType.byte;
  });
  return { tokens, scores, types };
}

export interface ModelToGgufOptions {
  type: GgufWriteType;
  /** general.name; defaults to the model's id. */
  name?: string;
  /**
   * Sublayers to leave out. Whole blocks only: a `llama` file with those blocks removed and the
   * rest renumbered. Any single sublayer: a `deci` file (llama.cpp's per-layer variant, below).
   */
  drop?: DropSpec;
}

/**
 * llama.cpp's `deci` architecture reads per-layer arrays `deci.attention.head_count`,
 * `deci.attention.head_count_kv` and `deci.feed_forward_length`:
 *  - head_count 0: the layer has no attention (its input passes straight to the FFN, no tensors);
 *  - head_count > 0 with head_count_kv 0: a "linear attention" (attn_output only, [dim, dim]);
 *  - feed_forward_length 0: llama.cpp skips the rest of the layer, and with it the layer's
 *    attention output too. So an FFN dropped under a kept attention is written as a zero FFN
 *    (ZERO_FFN_WIDTH wide, every weight 0: it adds exactly 0), and the plan is also recorded in
 *    `dropserve.drop_attention` / `dropserve.drop_mlp` (numbered as the file's blocks) so that
 *    dropserve drops it outright. Whole dropped blocks are removed, as in a `llama` file.
 */
export const ZERO_FFN_WIDTH = 32;

/** Whether a drop spec removes whole blocks only (a shorter `llama` file) or single sublayers (`deci`). */
export function ggufArchitectureFor(drop: DropSpec | undefined): 'llama' | 'deci' {
  if (!drop) return 'llama';
  const attention = [...drop.dropAttention].sort((a, b) => a - b);
  const mlp = [...drop.dropMlp].sort((a, b) => a - b);
  return attention.length === mlp.length && attention.every((l, i) => l === mlp[i]) ? 'llama' : 'deci';
}

/** Writes a loaded Llama model as a llama.cpp-compatible GGUF file. */
export function writeModelAsGguf(file: string, model: LoadedModel, options: ModelToGgufOptions): void {
  const { metadata, tensors } = modelAsGguf(model, options);
  writeGgufFile(file, metadata, tensors);
}

/** The metadata and tensors of a model's GGUF file (tests edit them to make broken files). */
export function modelAsGguf(
  model: LoadedModel,
  options: ModelToGgufOptions,
): { metadata: Record<string, GgufValue>; tensors: GgufTensorToWrite[] } {
  const { config, weights } = model;
  if (config.hasQkvBias) throw new RangeError('GGUF llama tensors hold no q/k/v biases (Qwen2 models)');
  if (config.ropeScaling) throw new RangeError('Llama 3 RoPE scaling is not written to GGUF here');
  const drop = options.drop ?? { dropAttention: [], dropMlp: [] };
  if (drop.emulation && [...drop.emulation.attention, ...drop.emulation.mlp].some((e) => e !== null)) {
    throw new RangeError('GGUF has no form for dropserve emulations (bias / low-rank replacements)');
  }
  const arch = ggufArchitectureFor(drop);
  const matrixType = TYPE_IDS[options.type];
  const tensors: GgufTensorToWrite[] = [];
  const vector = (name: string, values: Float32Array) =>
    tensors.push({ name, dims: [values.length], type: GGMLQuantizationType.F32, data: encode(values, 0) });
  const matrix = (name: string, values: Float32Array, rows: number) => {
    const cols = values.length / rows;
    // Rows whose length is not a whole number of blocks fall back to F16, as llama.cpp's quantizer does.
    const blockValues = ggmlLayout(matrixType)!.blockValues;
    const type = cols % blockValues === 0 ? matrixType : GGMLQuantizationType.F16;
    tensors.push({ name, dims: [cols, rows], type, data: encode(values, type) });
  };
  const rope = (w: Float32Array, heads: number) =>
    config.ropeInterleaved ? w : interleaveRopeRows(w, heads, config.headDim);
  const { qDim, kvDim } = sizes(config);
  const headCounts: number[] = [];
  const kvHeadCounts: number[] = [];
  const ffnLengths: number[] = [];
  matrix('token_embd.weight', weights.tokenEmbedding, config.vocabSize);
  let written = 0;
  /** The sublayers the file leaves out, numbered as the file's blocks. */
  const fileDrops: { dropAttention: number[]; dropMlp: number[] } = { dropAttention: [], dropMlp: [] };
  weights.layers.forEach((layer, l) => {
    const dropsAttention = drop.dropAttention.includes(l);
    const dropsMlp = drop.dropMlp.includes(l);
    // Whole blocks leave the file in both architectures (llama.cpp's deci graph aborts in ggml-backend
    // on a last layer with neither attention nor FFN).
    if (dropsAttention && dropsMlp) return;
    const p = `blk.${written++}.`;
    if (dropsAttention) fileDrops.dropAttention.push(written - 1);
    if (dropsMlp) fileDrops.dropMlp.push(written - 1);
    headCounts.push(dropsAttention ? 0 : config.numHeads);
    kvHeadCounts.push(dropsAttention ? 0 : config.numKvHeads);
    if (!dropsAttention) {
      vector(`${p}attn_norm.weight`, layer.attnNorm);
      matrix(`${p}attn_q.weight`, rope(layer.wq, config.numHeads), qDim);
      matrix(`${p}attn_k.weight`, rope(layer.wk, config.numKvHeads), kvDim);
      matrix(`${p}attn_v.weight`, layer.wv, kvDim);
      matrix(`${p}attn_output.weight`, layer.wo, config.dim);
    }
    const zero = dropsMlp ? new Float32Array(ZERO_FFN_WIDTH * config.dim) : undefined;
    const width = dropsMlp ? ZERO_FFN_WIDTH : config.hiddenDim;
    ffnLengths.push(width);
    vector(`${p}ffn_norm.weight`, layer.mlpNorm);
    matrix(`${p}ffn_gate.weight`, zero ?? layer.wGate, width);
    matrix(`${p}ffn_up.weight`, zero ?? layer.wUp, width);
    matrix(`${p}ffn_down.weight`, zero ?? layer.wDown, config.dim);
  });
  vector('output_norm.weight', weights.finalNorm);
  if (weights.lmHead !== weights.tokenEmbedding) matrix('output.weight', weights.lmHead, config.vocabSize);
  const perLayer = (values: number[], same: number): GgufValue =>
    arch === 'deci' ? { type: 'i32[]', value: values } : { type: 'u32', value: same };
  const metadata: Record<string, GgufValue> = {
    'general.architecture': { type: 'string', value: arch },
    'general.name': { type: 'string', value: options.name ?? model.source.id },
    'general.file_type': { type: 'u32', value: FILE_TYPES[options.type] },
    'general.alignment': { type: 'u32', value: ALIGNMENT },
    [`${arch}.context_length`]: { type: 'u32', value: config.maxSeqLen },
    [`${arch}.embedding_length`]: { type: 'u32', value: config.dim },
    [`${arch}.block_count`]: { type: 'u32', value: written },
    [`${arch}.feed_forward_length`]: perLayer(ffnLengths, config.hiddenDim),
    [`${arch}.attention.head_count`]: perLayer(headCounts, config.numHeads),
    [`${arch}.attention.head_count_kv`]: perLayer(kvHeadCounts, config.numKvHeads),
    [`${arch}.rope.dimension_count`]: { type: 'u32', value: config.headDim },
    [`${arch}.rope.freq_base`]: { type: 'f32', value: config.ropeTheta },
    [`${arch}.attention.layer_norm_rms_epsilon`]: { type: 'f32', value: config.rmsNormEps },
    [`${arch}.vocab_size`]: { type: 'u32', value: config.vocabSize },
    // deci layers without attention leave llama.cpp no head count to derive the head size from.
    ...(arch === 'deci' || config.headDim * config.numHeads !== config.dim
      ? {
          [`${arch}.attention.key_length`]: { type: 'u32', value: config.headDim } as GgufValue,
          [`${arch}.attention.value_length`]: { type: 'u32', value: config.headDim } as GgufValue,
        }
      : {}),
    ...(drop.dropAttention.length > 0 || drop.dropMlp.length > 0
      ? {
          'dropserve.drop_attention': { type: 'i32[]', value: fileDrops.dropAttention } as GgufValue,
          'dropserve.drop_mlp': { type: 'i32[]', value: fileDrops.dropMlp } as GgufValue,
          'dropserve.removed_blocks': {
            type: 'i32[]',
            value: drop.dropAttention.filter((l) => drop.dropMlp.includes(l)).sort((a, b) => a - b),
          } as GgufValue,
          'dropserve.source_block_count': { type: 'u32', value: config.numLayers } as GgufValue,
        }
      : {}),
    ...tokenizerMetadata(model),
  };
  return { metadata, tensors };
}

function sizes(config: ModelConfig): { qDim: number; kvDim: number } {
  return { qDim: config.numHeads * config.headDim, kvDim: config.numKvHeads * config.headDim };
}
