import fs from 'node:fs';
import { DropserveError, modelLoadError } from '../errors.ts';
import type { ModelConfig } from './config.ts';
import { MAX_IMAGE_BYTES, type WeightFileImage } from './weight-file.ts';
import type { LayerWeights, ModelWeights } from './weights.ts';

/**
 * llama2.c legacy checkpoint (export version 0), all float32:
 *
 *   header  7 × int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *   token_embedding [vocab, dim]
 *   rms_att [L, dim]
 *   wq [L, dim, dim]   wk [L, kvDim, dim]   wv [L, kvDim, dim]   wo [L, dim, dim]
 *   rms_ffn [L, dim]
 *   w1 [L, hidden, dim]   w2 [L, dim, hidden]   w3 [L, hidden, dim]
 *   rms_final [dim]
 *   freq_cis_real [seq_len, headDim/2]   freq_cis_imag [seq_len, headDim/2]   (skipped: we compute RoPE)
 *   wcls [vocab, dim]   only when the header's vocab_size is negative (untied classifier)
 *
 * Each tensor family is stored for all layers back to back, so layer l's wq starts l·dim·dim floats in.
 */

const HEADER_INTS = 7;
const HEADER_BYTES = HEADER_INTS * 4;
/** Newer llama2.c exports (version ≥ 1) start with this magic ("ak42" read as a LE uint32). */
const LLAMA2C_MAGIC = 0x616b3432;
/** Generous sanity bounds: a header outside them is not a llama2.c checkpoint. */
const MAX_DIM = 1 << 16;
const MAX_LAYERS = 1024;
const MAX_VOCAB = 1 << 22;
const MAX_SEQ_LEN = 1 << 22;

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** As stored: negative means an unshared classifier follows the RoPE tables. */
  vocabSize: number;
  seqLen: number;
}

export function loadLlama2cCheckpoint(path: string): {
  config: ModelConfig;
  weights: ModelWeights;
  /** Present when the weights are views of one in-memory image of the file (files up to 4 GiB). */
  weightFile?: WeightFileImage;
} {
  if (!fs.existsSync(path)) throw modelLoadError(path, 'no such file');
  const fileBytes = fs.statSync(path).size;
  if (fileBytes < HEADER_BYTES) {
    throw modelLoadError(
      path,
      `file is ${fileBytes} bytes, shorter than the ${HEADER_BYTES}-byte llama2.c header`,
    );
  }
  const fd = fs.openSync(path, 'r');
  try {
    const header = readHeader(fd, path);
    const config = configFromHeader(header);
    const expectedBytes = expectedFileBytes(header);
    if (fileBytes !== expectedBytes) {
      throw modelLoadError(
        path,
        `header (dim ${header.dim}, hidden ${header.hiddenDim}, ${header.numLayers} layers, ${header.numHeads} heads, ` +
          `${header.numKvHeads} kv heads, vocab ${header.vocabSize}, seq_len ${header.seqLen}) implies ` +
          `${expectedBytes} bytes, found ${fileBytes} (${fileBytes < expectedBytes ? 'truncated' : 'trailing data'})`,
      );
    }
    const image = fileBytes <= MAX_IMAGE_BYTES ? readImage(fd, path, fileBytes) : undefined;
    const weights = readWeights(fd, path, config, header.vocabSize < 0, image);
    return { config, weights, ...(image ? { weightFile: { path, image } } : {}) };
  } finally {
    fs.closeSync(fd);
  }
}

function readHeader(fd: number, path: string): Llama2cHeader {
  const buf = Buffer.alloc(HEADER_BYTES);
  fs.readSync(fd, buf, 0, HEADER_BYTES, 0);
  if (buf.readUInt32LE(0) === LLAMA2C_MAGIC) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${path}: llama2.c export version ${buf.readInt32LE(4)} (magic "ak42"); only the legacy version-0 float32 format is supported`,
    );
  }
  const v = Array.from({ length: HEADER_INTS }, (_, i) => buf.readInt32LE(i * 4));
  const header: Llama2cHeader = {
    dim: v[0]!,
    hiddenDim: v[1]!,
    numLayers: v[2]!,
    numHeads: v[3]!,
    numKvHeads: v[4]!,
    vocabSize: v[5]!,
    seqLen: v[6]!,
  };
  const problem = headerProblem(header);
  if (problem) {
    throw modelLoadError(path, `not a llama2.c checkpoint: ${problem} (header ${JSON.stringify(header)})`);
  }
  return header;
}

function headerProblem(h: Llama2cHeader): string | undefined {
  const inRange = (name: string, value: number, max: number) =>
    value >= 1 && value <= max ? undefined : `${name} ${value} outside 1..${max}`;
  return (
    inRange('dim', h.dim, MAX_DIM) ??
    inRange('hidden_dim', h.hiddenDim, 16 * MAX_DIM) ??
    inRange('n_layers', h.numLayers, MAX_LAYERS) ??
    inRange('n_heads', h.numHeads, h.dim) ??
    inRange('n_kv_heads', h.numKvHeads, h.numHeads) ??
    inRange('|vocab_size|', Math.abs(h.vocabSize), MAX_VOCAB) ??
    inRange('seq_len', h.seqLen, MAX_SEQ_LEN) ??
    (h.dim % h.numHeads !== 0 ? `dim ${h.dim} is not a multiple of n_heads ${h.numHeads}` : undefined) ??
    (h.numHeads % h.numKvHeads !== 0
      ? `n_heads ${h.numHeads} is not a multiple of n_kv_heads ${h.numKvHeads}`
      : undefined) ??
    ((h.dim / h.numHeads) % 2 !== 0 ? `head size ${h.dim / h.numHeads} is odd (RoPE needs pairs)` : undefined)
  );
}

function configFromHeader(h: Llama2cHeader): ModelConfig {
  const vocabSize = Math.abs(h.vocabSize);
  return {
    architecture: 'llama',
    dim: h.dim,
    hiddenDim: h.hiddenDim,
    numLayers: h.numLayers,
    numHeads: h.numHeads,
    numKvHeads: h.numKvHeads,
    headDim: h.dim / h.numHeads,
    vocabSize,
    maxSeqLen: h.seqLen,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeInterleaved: true,
    hasQkvBias: false,
    tieWordEmbeddings: h.vocabSize > 0,
    bosTokenId: 1,
    // llama2.c trains on stories each prefixed by BOS and ends none with EOS, so a finished story is
    // followed by BOS: run.c stops there ("the BOS (=1) token delimits sequences"). EOS (2) stays for
    // Llama 2 exports, which do end with it.
    eosTokenIds: [1, 2],
  };
}

/** File size the header implies, in bytes. */
export function expectedFileBytes(h: Llama2cHeader): number {
  const vocab = Math.abs(h.vocabSize);
  const headDim = h.dim / h.numHeads;
  const kvDim = headDim * h.numKvHeads;
  const perLayer = 2 * h.dim + 2 * h.dim * h.dim + 2 * kvDim * h.dim + 3 * h.hiddenDim * h.dim;
  const floats =
    vocab * h.dim +
    h.numLayers * perLayer +
    h.dim +
    h.seqLen * headDim +
    (h.vocabSize < 0 ? vocab * h.dim : 0);
  return HEADER_BYTES + 4 * floats;
}

/** The whole file in one read: every tensor becomes a view at its file offset (4-byte aligned). */
function readImage(fd: number, path: string, fileBytes: number): ArrayBuffer {
  const image = new ArrayBuffer(fileBytes);
  const bytes = new Uint8Array(image);
  let done = 0;
  while (done < fileBytes) {
    const n = fs.readSync(fd, bytes, done, fileBytes - done, done);
    if (n === 0) throw modelLoadError(path, `file ended at byte ${done} while reading weights`);
    done += n;
  }
  return image;
}

function readWeights(
  fd: number,
  path: string,
  config: ModelConfig,
  hasClassifier: boolean,
  image: ArrayBuffer | undefined,
): ModelWeights {
  const { dim, hiddenDim, numLayers, vocabSize } = config;
  const kvDim = config.headDim * config.numKvHeads;
  let position = HEADER_BYTES;
  // Reads `count` tensors of `size` floats each, consecutive in the file.
  const next = (count: number, size: number): Float32Array[] => {
    const out: Float32Array[] = [];
    for (let i = 0; i < count; i++) {
      if (image) {
        out.push(new Float32Array(image, position, size));
        position += size * 4;
        continue;
      }
      const t = new Float32Array(size);
      const bytes = new Uint8Array(t.buffer);
      let done = 0;
      while (done < bytes.length) {
        const n = fs.readSync(fd, bytes, done, bytes.length - done, position + done);
        if (n === 0)
          throw modelLoadError(path, `file ended at byte ${position + done} while reading weights`);
        done += n;
      }
      position += bytes.length;
      out.push(t);
    }
    return out;
  };
  const [tokenEmbedding] = next(1, vocabSize * dim);
  const attnNorm = next(numLayers, dim);
  const wq = next(numLayers, dim * dim);
  const wk = next(numLayers, kvDim * dim);
  const wv = next(numLayers, kvDim * dim);
  const wo = next(numLayers, dim * dim);
  const mlpNorm = next(numLayers, dim);
  const w1 = next(numLayers, hiddenDim * dim);
  const w2 = next(numLayers, dim * hiddenDim);
  const w3 = next(numLayers, hiddenDim * dim);
  const [finalNorm] = next(1, dim);
  position += config.maxSeqLen * config.headDim * 4; // freq_cis_real + freq_cis_imag, unused
  const lmHead = hasClassifier ? next(1, vocabSize * dim)[0]! : tokenEmbedding!;
  const layers: LayerWeights[] = [];
  for (let l = 0; l < numLayers; l++) {
    layers.push({
      attnNorm: attnNorm[l]!,
      wq: wq[l]!,
      wk: wk[l]!,
      wv: wv[l]!,
      wo: wo[l]!,
      mlpNorm: mlpNorm[l]!,
      wGate: w1[l]!,
      wDown: w2[l]!,
      wUp: w3[l]!,
    });
  }
  return { tokenEmbedding: tokenEmbedding!, layers, finalNorm: finalNorm!, lmHead };
}
