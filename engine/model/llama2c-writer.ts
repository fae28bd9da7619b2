import fs from 'node:fs';
import type { ModelConfig } from './config.ts';
import type { ModelWeights } from './weights.ts';

/**
 * Writes weights as a llama2.c legacy (version 0) checkpoint, the layout llama2c-loader.ts reads:
 * used to make large benchmark checkpoints (e.g. the 110M shape) without shipping one. The RoPE
 * tables llama2.c stores are written as zeros: no reader here uses them.
 */
export function writeLlama2cCheckpoint(file: string, config: ModelConfig, weights: ModelWeights): void {
  if (config.hasQkvBias || config.dim !== config.numHeads * config.headDim) {
    throw new RangeError('llama2.c checkpoints hold no QKV biases and need dim = heads × head_dim');
  }
  const isTied = weights.lmHead === weights.tokenEmbedding;
  const header = Int32Array.of(
    config.dim,
    config.hiddenDim,
    config.numLayers,
    config.numHeads,
    config.numKvHeads,
    isTied ? config.vocabSize : -config.vocabSize,
    config.maxSeqLen,
  );
  const { layers } = weights;
  const parts: (Int32Array | Float32Array)[] = [
    header,
    weights.tokenEmbedding,
    ...layers.map((l) => l.attnNorm),
    ...layers.map((l) => l.wq),
    ...layers.map((l) => l.wk),
    ...layers.map((l) => l.wv),
    ...layers.map((l) => l.wo),
    ...layers.map((l) => l.mlpNorm),
    ...layers.map((l) => l.wGate),
    ...layers.map((l) => l.wDown),
    ...layers.map((l) => l.wUp),
    weights.finalNorm,
    new Float32Array(config.maxSeqLen * config.headDim), // freq_cis_real + freq_cis_imag
    ...(isTied ? [] : [weights.lmHead]),
  ];
  const fd = fs.openSync(file, 'w');
  try {
    for (const part of parts) fs.writeSync(fd, new Uint8Array(part.buffer, part.byteOffset, part.byteLength));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A llama2.c tokenizer file of `vocabSize` pieces in the layout real ones have: <unk>, BOS, EOS,
 * the 256 byte-fallback pieces, then made-up merges, so a synthetic model of any vocab can be
 * served through the llama2.c path.
 */
export function writeSyntheticLlama2cTokenizer(file: string, vocabSize: number): void {
  const pieces = ['<unk>', '\n<s>\n', '\n</s>\n'];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  const letters = 'etaoinshrdlucmfwypvbgkjqxz';
  for (let id = pieces.length; id < vocabSize; id++) {
    let piece = '';
    for (let n = id; piece.length === 0 || n > 0; n = Math.floor(n / letters.length)) {
      piece += letters[n % letters.length];
    }
    pieces.push(id % 3 === 0 ? ` ${piece}` : piece);
  }
  const encoded = pieces.slice(0, vocabSize).map((p) => Buffer.from(p, 'utf8'));
  const maxLength = Math.max(...encoded.map((b) => b.length));
  const chunks: Buffer[] = [Buffer.from(Int32Array.of(maxLength).buffer)];
  encoded.forEach((bytes, id) => {
    const entry = Buffer.alloc(8);
    entry.writeFloatLE(id < 259 ? 0 : -(id - 259), 0);
    entry.writeInt32LE(bytes.length, 4);
    chunks.push(entry, bytes);
  });
  fs.writeFileSync(file, Buffer.concat(chunks));
}
