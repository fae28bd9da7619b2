import fs from 'node:fs';
import path from 'node:path';
import { type GGUFParseOutput, type GGUFTensorInfo, gguf } from '@huggingface/gguf';
import { DropserveError, modelLoadError } from '../errors.ts';
import type { DropSpec } from '../plan/plan.ts';
import type { QuantizedMatrix } from '../quant/quantized-matrix.ts';
import { tokenizerFromGguf } from '../tokenizer/gguf-tokenizer.ts';
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import type { ModelConfig } from './config.ts';
import { ggufTensorToMatrix } from './gguf-matrix.ts';
import {
  DECODABLE_TYPES,
  decodeToFloat32,
  GGMLQuantizationType,
  ggmlByteSize,
  ggmlTypeName,
} from './gguf-tensors.ts';
import type {
  LayerWeights,
  LinearWeightName,
  ModelWeights,
  QuantizedLinears,
  WeightFormat,
} from './weights.ts';

/**
 * `--model file.gguf`: a llama-architecture GGUF file (llama.cpp, ollama, LM Studio), or a `deci`
 * one (per-layer head counts / FFN widths, as `prune export --format gguf` writes): its layers
 * without attention or FFN become the model's built-in plan.
 * @huggingface/gguf parses the header (metadata and tensor infos); tensor data is read here.
 *
 *  - metadata `llama.*` → ModelConfig. GGUF llama tensors are stored for llama.cpp's default RoPE,
 *    which rotates adjacent pairs (llama.cpp's converter permutes HF q/k rows into that order), so
 *    the config is ropeInterleaved like llama2.c.
 *  - F32/F16/BF16 tensors become float32 exactly.
 *  - Q8_0 / Q4_0 linears map onto MatMulNBits (32-value blocks with one scale, like GGUF's) without
 *    changing a value; the float32 fields hold dequantize() of the same matrix.
 *  - Q4_1, Q5_0, Q5_1 and the K-quants (Q2_K…Q6_K) are dequantized to float32, with a warning that
 *    `--weights` decides how they are stored.
 *  - Other types: an error naming the tensor and its type.
 */

export interface GgufModel {
  config: ModelConfig;
  weights: ModelWeights;
  tokenizer: Tokenizer;
  /** general.name, or the file stem. */
  name: string;
  /** e.g. "Q8_0 ×35, F32 ×11" (tensor types by count, most common first). */
  typeSummary: string;
  /** Things the user should know (K-quants dequantized). */
  warnings: string[];
  /** The sublayers a pruned export left out (a `deci` file, or any file dropserve wrote from a plan). */
  builtInPlan?: DropSpec;
}

/** Per layer: whether it has attention / an FFN (a `llama` file has both everywhere). */
interface LayerLayout {
  attention: boolean[];
  ffn: boolean[];
  /** Largest per-layer head count, KV head count and FFN width. */
  numHeads: number;
  numKvHeads: number;
  hiddenDim: number;
}

const GGUF_MAGIC = 'GGUF';
/** Types whose values float32 holds as they are; every other non-mapped type is dequantized with a warning. */
const PLAIN_FLOAT_TYPES: readonly number[] = [
  GGMLQuantizationType.F32,
  GGMLQuantizationType.F16,
  GGMLQuantizationType.BF16,
];

/** Whether a file starts with the GGUF magic. */
export function isGgufFile(file: string): boolean {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(4);
      return fs.readSync(fd, buf, 0, 4, 0) === 4 && buf.toString('latin1') === GGUF_MAGIC;
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

type Metadata = Record<string, unknown>;

export async function loadGgufModel(file: string): Promise<GgufModel> {
  if (!fs.existsSync(file)) throw modelLoadError(file, 'no such file');
  if (!isGgufFile(file)) throw modelLoadError(file, 'not a GGUF file (no "GGUF" magic at the start)');
  let parsed: GGUFParseOutput;
  try {
    parsed = await gguf(path.resolve(file), { allowLocalFile: true });
  } catch (e) {
    throw modelLoadError(file, `cannot parse the GGUF header (${(e as Error).message})`, e);
  }
  const meta = parsed.metadata as unknown as Metadata;
  const architecture = meta['general.architecture'];
  if (architecture !== 'llama' && architecture !== 'deci') {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${file}: GGUF architecture "${String(architecture)}" is not supported; only "llama" (Llama, Mistral-style and llama2.c models) and "deci" (per-layer pruned Llama) are`,
    );
  }
  const layout = layerLayout(meta, architecture, file);
  const config = configFromMetadata(meta, architecture, layout, file);
  const tokenizer = tokenizerFromGguf(
    {
      model: String(meta['tokenizer.ggml.model'] ?? 'none'),
      tokens: (meta['tokenizer.ggml.tokens'] as string[] | undefined) ?? [],
      scores: meta['tokenizer.ggml.scores'] as number[] | undefined,
      tokenTypes: meta['tokenizer.ggml.token_type'] as number[] | undefined,
      bosTokenId: optionalNumber(meta, 'tokenizer.ggml.bos_token_id'),
      eosTokenId: optionalNumber(meta, 'tokenizer.ggml.eos_token_id'),
      unknownTokenId: optionalNumber(meta, 'tokenizer.ggml.unknown_token_id'),
      addSpacePrefix: meta['tokenizer.ggml.add_space_prefix'] as boolean | undefined,
      addBosToken: meta['tokenizer.ggml.add_bos_token'] as boolean | undefined,
      chatTemplate: meta['tokenizer.chat_template'] as string | undefined,
      merges: meta['tokenizer.ggml.merges'] as string[] | undefined,
      pre: meta['tokenizer.ggml.pre'] as string | undefined,
    },
    file,
  );
  config.bosTokenId = tokenizer.bosTokenId;
  // End-of-generation ids as llama.cpp collects them: EOS, and EOT / EOM where the file names them.
  const stopIds = [
    tokenizer.eosTokenIds[0]!,
    optionalNumber(meta, 'tokenizer.ggml.eot_token_id'),
    optionalNumber(meta, 'tokenizer.ggml.eom_token_id'),
  ].filter((id): id is number => id !== undefined);
  config.eosTokenIds = [...new Set(stopIds)];
  const reader = new TensorReader(file, parsed);
  const { weights, warnings } = reader.readWeights(config, layout);
  const builtInPlan = builtInPlanOf(meta, layout, config.numLayers);
  return {
    ...(builtInPlan ? { builtInPlan } : {}),
    config,
    weights,
    tokenizer,
    name: typeof meta['general.name'] === 'string' ? meta['general.name'] : path.basename(file, '.gguf'),
    typeSummary: reader.typeSummary(),
    warnings,
  };
}

function optionalNumber(meta: Metadata, key: string): number | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  return typeof v === 'bigint' ? Number(v) : (v as number);
}

/** A float32 metadata value as the shortest decimal that reads back as it (1e-5, not 9.99999974e-6). */
function shortestFloat32(value: number): number {
  for (let digits = 1; digits < 17; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === value) return candidate;
  }
  return value;
}

function requiredNumber(meta: Metadata, key: string, file: string): number {
  const v = optionalNumber(meta, key);
  if (v === undefined || !Number.isFinite(v)) throw modelLoadError(file, `GGUF metadata has no ${key}`);
  return v;
}

/** A scalar or per-layer array key (llama.cpp reads either for head counts and FFN widths). */
function perLayerNumbers(meta: Metadata, key: string, numLayers: number, file: string): number[] | undefined {
  const v = meta[key];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) {
    if (v.length !== numLayers) {
      throw modelLoadError(file, `${key} has ${v.length} entries for ${numLayers} layers`);
    }
    return v.map(Number);
  }
  return Array(numLayers).fill(Number(v));
}

/**
 * Which layers have attention and an FFN. In `deci` files llama.cpp reads head count 0 as "no
 * attention" and FFN width 0 as "no FFN"; a head count > 0 with KV heads 0 is a linear attention
 * (attn_output alone), which dropserve does not run. A layer with fewer heads than the widest is
 * also refused: dropserve's layers share one shape.
 */
function layerLayout(meta: Metadata, arch: string, file: string): LayerLayout {
  const numLayers = requiredNumber(meta, `${arch}.block_count`, file);
  const heads = perLayerNumbers(meta, `${arch}.attention.head_count`, numLayers, file);
  if (!heads) throw modelLoadError(file, `GGUF metadata has no ${arch}.attention.head_count`);
  const kvHeads = perLayerNumbers(meta, `${arch}.attention.head_count_kv`, numLayers, file) ?? heads;
  const ffn = perLayerNumbers(meta, `${arch}.feed_forward_length`, numLayers, file);
  if (!ffn) throw modelLoadError(file, `GGUF metadata has no ${arch}.feed_forward_length`);
  const numHeads = Math.max(...heads);
  const numKvHeads = Math.max(...kvHeads);
  heads.forEach((h, l) => {
    if (h > 0 && kvHeads[l] === 0) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        `${file}: layer ${l} has a linear attention (head_count ${h}, head_count_kv 0), which dropserve does not run`,
      );
    }
    if (h > 0 && (h !== numHeads || kvHeads[l] !== numKvHeads)) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        `${file}: layer ${l} has ${h}/${kvHeads[l]} heads, others ${numHeads}/${numKvHeads}; dropserve needs one head count for every attention layer`,
      );
    }
  });
  const hiddenDim = Math.max(...ffn);
  if (numHeads === 0 || hiddenDim === 0) {
    throw modelLoadError(file, 'every layer drops its attention or its FFN; nothing is left to run');
  }
  return {
    attention: heads.map((h) => h > 0),
    ffn: ffn.map((f) => f > 0),
    numHeads,
    numKvHeads,
    hiddenDim,
  };
}

/** Layers without attention / FFN, plus those dropserve's own export recorded as dropped. */
function builtInPlanOf(meta: Metadata, layout: LayerLayout, numLayers: number): DropSpec | undefined {
  const recorded = (key: string): number[] => {
    const v = meta[key];
    if (!Array.isArray(v)) return [];
    return v.map(Number).filter((l) => Number.isInteger(l) && l >= 0 && l < numLayers);
  };
  const union = (absent: boolean[], extra: number[]) =>
    [...new Set([...absent.flatMap((has, l) => (has ? [] : [l])), ...extra])].sort((a, b) => a - b);
  const plan = {
    dropAttention: union(layout.attention, recorded('dropserve.drop_attention')),
    dropMlp: union(layout.ffn, recorded('dropserve.drop_mlp')),
  };
  return plan.dropAttention.length > 0 || plan.dropMlp.length > 0 ? plan : undefined;
}

function configFromMetadata(meta: Metadata, arch: string, layout: LayerLayout, file: string): ModelConfig {
  const dim = requiredNumber(meta, `${arch}.embedding_length`, file);
  const { numHeads, numKvHeads } = layout;
  const headDim =
    optionalNumber(meta, `${arch}.attention.key_length`) ??
    optionalNumber(meta, `${arch}.rope.dimension_count`) ??
    dim / numHeads;
  const ropeDims = optionalNumber(meta, `${arch}.rope.dimension_count`) ?? headDim;
  if (ropeDims !== headDim) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${file}: ${arch}.rope.dimension_count ${ropeDims} differs from the head size ${headDim} (partial RoPE is not supported)`,
    );
  }
  if (meta[`${arch}.rope.scaling.type`] !== undefined && meta[`${arch}.rope.scaling.type`] !== 'none') {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${file}: ${arch}.rope.scaling.type "${String(meta[`${arch}.rope.scaling.type`])}" is not supported`,
    );
  }
  const tokens = meta['tokenizer.ggml.tokens'] as unknown[] | undefined;
  const vocabSize = optionalNumber(meta, `${arch}.vocab_size`) ?? tokens?.length;
  if (vocabSize === undefined)
    throw modelLoadError(file, `GGUF metadata has neither ${arch}.vocab_size nor tokens`);
  if (numHeads % numKvHeads !== 0 || headDim % 2 !== 0) {
    throw modelLoadError(
      file,
      `head counts ${numHeads}/${numKvHeads} with head size ${headDim} do not fit together`,
    );
  }
  return {
    architecture: 'llama',
    dim,
    hiddenDim: layout.hiddenDim,
    numLayers: layout.attention.length,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    maxSeqLen: requiredNumber(meta, `${arch}.context_length`, file),
    rmsNormEps: shortestFloat32(optionalNumber(meta, `${arch}.attention.layer_norm_rms_epsilon`) ?? 1e-5),
    ropeTheta: shortestFloat32(optionalNumber(meta, `${arch}.rope.freq_base`) ?? 10000),
    ropeInterleaved: true,
    hasQkvBias: false,
    tieWordEmbeddings: false, // decided by the presence of output.weight
    bosTokenId: 1,
    eosTokenIds: [2],
  };
}

/** A linear tensor: its float32 values and, when it came as Q8_0/Q4_0, the same matrix quantized. */
interface LinearTensor {
  values: Float32Array;
  quantized?: QuantizedMatrix;
}

class TensorReader {
  readonly #file: string;
  readonly #dataStart: number;
  readonly #infos = new Map<string, GGUFTensorInfo>();
  readonly #typeCounts = new Map<number, number>();
  readonly #fd: number;
  readonly warnings: string[] = [];

  constructor(file: string, parsed: GGUFParseOutput) {
    this.#file = file;
    this.#dataStart = Number(parsed.tensorDataOffset);
    for (const info of parsed.tensorInfos) {
      this.#infos.set(info.name, info);
      this.#typeCounts.set(info.dtype, (this.#typeCounts.get(info.dtype) ?? 0) + 1);
    }
    this.#fd = fs.openSync(file, 'r');
  }

  typeSummary(): string {
    return [...this.#typeCounts]
      .sort((a, b) => b[1] - a[1])
      .map(([type, n]) => `${ggmlTypeName(type).replace(/ \(\d+\)$/, '')} ×${n}`)
      .join(', ');
  }

  readWeights(config: ModelConfig, layout: LayerLayout): { weights: ModelWeights; warnings: string[] } {
    try {
      return { weights: this.#readWeights(config, layout), warnings: this.warnings };
    } finally {
      fs.closeSync(this.#fd);
    }
  }

  #readWeights(config: ModelConfig, layout: LayerLayout): ModelWeights {
    // Llama 3.1+ files carry their RoPE frequency scaling as per-pair divisors; running without them
    // would give a different model silently.
    if (this.#infos.has('rope_freqs.weight')) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        `${this.#file}: tensor rope_freqs.weight (Llama 3.1-style RoPE frequency factors) is not supported`,
      );
    }
    const { dim, hiddenDim, vocabSize, headDim } = config;
    const qDim = config.numHeads * headDim;
    const kvDim = config.numKvHeads * headDim;
    const tokenEmbedding = this.#linear('token_embd.weight', vocabSize, dim).values;
    const layers: LayerWeights[] = [];
    const quantizedLayers: QuantizedLinears[] = [];
    const bitsSeen = new Set<number>();
    for (let l = 0; l < config.numLayers; l++) {
      const p = `blk.${l}.`;
      const quantized: QuantizedLinears = {};
      const linear = (key: LinearWeightName, name: string, rows: number, cols: number) => {
        const t = this.#linear(`${p}${name}`, rows, cols);
        if (t.quantized) {
          quantized[key] = t.quantized;
          bitsSeen.add(t.quantized.bits);
        }
        return t.values;
      };
      // A sublayer the file leaves out is served dropped (the built-in plan); zeros fill its place,
      // so the layer adds nothing even where a graph keeps the sublayer.
      const hasAttention = layout.attention[l]!;
      const attention = hasAttention
        ? {
            attnNorm: this.#vector(`${p}attn_norm.weight`, dim),
            wq: linear('wq', 'attn_q.weight', qDim, dim),
            wk: linear('wk', 'attn_k.weight', kvDim, dim),
            wv: linear('wv', 'attn_v.weight', kvDim, dim),
            wo: linear('wo', 'attn_output.weight', dim, qDim),
          }
        : {
            attnNorm: new Float32Array(dim),
            wq: new Float32Array(qDim * dim),
            wk: new Float32Array(kvDim * dim),
            wv: new Float32Array(kvDim * dim),
            wo: new Float32Array(dim * qDim),
          };
      const ffnWidth = this.#infos.get(`${p}ffn_down.weight`)?.shape.map(Number)[0];
      const hasFullFfn = layout.ffn[l]! && ffnWidth === hiddenDim;
      if (layout.ffn[l] && !hasFullFfn && !this.#isZeroFfn(p, dim, ffnWidth)) {
        throw new DropserveError(
          'DS_UNSUPPORTED',
          `${this.#file}: layer ${l} has an FFN of width ${ffnWidth}, others ${hiddenDim}; dropserve needs one width for every FFN`,
        );
      }
      const ffn = hasFullFfn
        ? {
            mlpNorm: this.#vector(`${p}ffn_norm.weight`, dim),
            wGate: linear('wGate', 'ffn_gate.weight', hiddenDim, dim),
            wUp: linear('wUp', 'ffn_up.weight', hiddenDim, dim),
            wDown: linear('wDown', 'ffn_down.weight', dim, hiddenDim),
          }
        : {
            mlpNorm: new Float32Array(dim),
            wGate: new Float32Array(hiddenDim * dim),
            wUp: new Float32Array(hiddenDim * dim),
            wDown: new Float32Array(dim * hiddenDim),
          };
      layers.push({ ...attention, ...ffn });
      quantizedLayers.push(quantized);
    }
    const finalNorm = this.#vector('output_norm.weight', dim);
    const hasOutput = this.#infos.has('output.weight');
    config.tieWordEmbeddings = !hasOutput;
    const output = hasOutput ? this.#linear('output.weight', vocabSize, dim) : undefined;
    const weights: ModelWeights = {
      tokenEmbedding,
      layers,
      finalNorm,
      lmHead: output?.values ?? tokenEmbedding,
    };
    if (output?.quantized) weights.lmHeadQuantized = output.quantized;
    if (quantizedLayers.some((q) => Object.keys(q).length > 0)) weights.quantizedLayers = quantizedLayers;
    const format = this.#fileFormat(bitsSeen);
    if (format) weights.format = format;
    return weights;
  }

  /**
   * int8/int4 when the file's quantized linears are all of one width. F16 files are not marked fp16:
   * their values are exact in float32, and `--weights fp16` stores them as halves without loss.
   */
  #fileFormat(bitsSeen: Set<number>): WeightFormat | undefined {
    if (bitsSeen.size !== 1) return undefined;
    return bitsSeen.has(8) ? 'int8' : 'int4';
  }

  /** A narrower FFN whose down projection is all zeros: how a dropped FFN under a kept attention is written. */
  #isZeroFfn(prefix: string, dim: number, width: number | undefined): boolean {
    if (width === undefined) return false;
    const down = this.#linear(`${prefix}ffn_down.weight`, dim, width).values;
    return down.every((x) => x === 0);
  }

  #info(name: string, shape: number[]): GGUFTensorInfo {
    const info = this.#infos.get(name);
    if (!info) throw modelLoadError(this.#file, `GGUF has no tensor ${name}`);
    const found = info.shape.map(Number);
    if (found.length !== shape.length || found.some((d, i) => d !== shape[i])) {
      throw modelLoadError(
        this.#file,
        `tensor ${name} has shape [${found.join(', ')}], the config implies [${shape.join(', ')}] (GGUF order, innermost first)`,
      );
    }
    return info;
  }

  #bytes(info: GGUFTensorInfo, count: number): Uint8Array {
    const size = ggmlByteSize(info.dtype, count);
    if (size === undefined || !DECODABLE_TYPES.includes(info.dtype)) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        `${this.#file}: tensor ${info.name} has type ${ggmlTypeName(info.dtype)}, which dropserve cannot load ` +
          `(supported: ${DECODABLE_TYPES.map((t) => ggmlTypeName(t)).join(', ')})`,
      );
    }
    const bytes = new Uint8Array(size);
    const start = this.#dataStart + Number(info.offset);
    let done = 0;
    while (done < size) {
      const n = fs.readSync(this.#fd, bytes, done, size - done, start + done);
      if (n === 0) throw modelLoadError(this.#file, `file ends inside tensor ${info.name}`);
      done += n;
    }
    return bytes;
  }

  #vector(name: string, length: number): Float32Array {
    const info = this.#info(name, [length]);
    return decodeToFloat32(info.dtype, this.#bytes(info, length), length);
  }

  #linear(name: string, rows: number, cols: number): LinearTensor {
    const info = this.#info(name, [cols, rows]);
    const bytes = this.#bytes(info, rows * cols);
    const quantized = ggufTensorToMatrix(info.dtype, bytes, rows, cols);
    // decodeToFloat32 gives the same float32 products as dequantize(quantized), faster.
    if (quantized) return { values: decodeToFloat32(info.dtype, bytes, rows * cols), quantized };
    if (!PLAIN_FLOAT_TYPES.includes(info.dtype)) {
      this.warnings.push(
        `${name} is ${ggmlTypeName(info.dtype)}: dequantized to float32; --weights decides how the graph stores it (int8/int4 requantize it by round-to-nearest)`,
      );
    }
    return { values: decodeToFloat32(info.dtype, bytes, rows * cols) };
  }
}
