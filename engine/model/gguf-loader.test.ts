import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  describeWithAssets,
  LLAMA2C_TOKENIZER,
  STORIES_260K,
  TINYSTORIES_EVAL,
} from '../../tests/support/shared-assets.ts';
import { DropserveError } from '../errors.ts';
import { dequantize } from '../quant/quantized-matrix.ts';
import { parseWeightFlags, withWeightOptions } from '../quant/weight-flags.ts';
import { tokenizerFromGguf } from '../tokenizer/gguf-tokenizer.ts';
import { HfTokenizer } from '../tokenizer/hf-tokenizer.ts';
import { Llama2cTokenizer } from '../tokenizer/llama2c-tokenizer.ts';
import { llama3StyleTokenizerJson, TEST_TOKENS } from '../tokenizer/testing/byte-level-vocab.ts';
import { isGgufFile, loadGgufModel } from './gguf-loader.ts';
import { decodeToFloat32, encodeF16, GGMLQuantizationType } from './gguf-tensors.ts';
import { llama2cVocabularyAsGguf, modelAsGguf, writeGgufFile, writeModelAsGguf } from './gguf-writer.ts';
import { writeSyntheticLlama2cTokenizer } from './llama2c-writer.ts';
import { loadModel } from './load-model.ts';
import type { LoadedModel } from './loaded-model.ts';
import { SeededRandom } from './random.ts';
import { syntheticConfig, syntheticWeights } from './synthetic.ts';
import { LINEAR_WEIGHT_NAMES } from './weights.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-gguf-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const file = (name: string) => path.join(tmp, name);

const TEXTS = [
  'Once upon a time',
  'Lily and Ben went to the park. They saw a big dog!',
  '  two spaces, tabs\tand\nnewlines  ',
  'Unicode: naïve café, “quotes”, 日本語 and 😀.',
  '',
];

let source: LoadedModel;
beforeAll(async () => {
  source = await loadModel({ model: STORIES_260K });
  for (const type of ['f32', 'f16', 'q8_0', 'q4_0'] as const) {
    writeModelAsGguf(file(`stories260K-${type}.gguf`), source, { type });
  }
});

async function expectLoadError(gguf: string, code: string, message: RegExp): Promise<void> {
  const error = await loadGgufModel(gguf).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(DropserveError);
  expect((error as DropserveError).code).toBe(code);
  expect((error as DropserveError).message).toMatch(message);
}

describe('GGUF from stories260K (written here from the llama2.c checkpoint)', () => {
  it('F32: config, tied weights and every tensor come back exactly; --model picks it up as kind "gguf"', async () => {
    const gguf = file('stories260K-f32.gguf');
    expect(isGgufFile(gguf)).toBe(true);
    expect(isGgufFile(STORIES_260K)).toBe(false);
    const model = await loadModel({ model: gguf });
    expect(model.source).toMatchObject({ kind: 'gguf', id: 'stories260K-f32', path: gguf });
    expect(model.source.description).toMatch(
      /^GGUF stories260K \(stories260K-f32\.gguf: 5 layers, dim 64, vocab 512; F32 ×47\)$/,
    );
    expect(model.config).toEqual({ ...source.config, eosTokenIds: [2, 1] });
    const { weights } = model;
    expect(weights.lmHead).toBe(weights.tokenEmbedding);
    expect(weights.tokenEmbedding).toEqual(source.weights.tokenEmbedding);
    expect(weights.finalNorm).toEqual(source.weights.finalNorm);
    expect(weights.layers).toEqual(source.weights.layers);
    expect(weights.quantizedLayers).toBeUndefined();
  });

  it('the embedded vocabulary tokenizes as tok512.bin does, and decodes back', async () => {
    const { tokenizer } = await loadModel({ model: file('stories260K-f32.gguf') });
    expect(tokenizer.vocabSize).toBe(512);
    expect(tokenizer.encode('Once upon a time', { addBos: true })).toEqual([1, 403, 407, 261, 378]);
    for (const text of TEXTS) {
      expect(tokenizer.encode(text, { addBos: true })).toEqual(
        source.tokenizer.encode(text, { addBos: true }),
      );
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text.length > 0 ? text : '');
    }
    expect(tokenizer.specialTokens).toEqual({ bos: '<s>', eos: '</s>' });
  });

  it('F16: every matrix is its fp16 rounding, norms stay F32', async () => {
    const model = await loadGgufModel(file('stories260K-f16.gguf'));
    expect(model.typeSummary).toBe('F16 ×36, F32 ×11');
    const half = (v: Float32Array) => decodeToFloat32(GGMLQuantizationType.F16, encodeF16(v), v.length);
    expect(model.weights.layers[2]!.wq).toEqual(half(source.weights.layers[2]!.wq));
    expect(model.weights.layers[2]!.attnNorm).toEqual(source.weights.layers[2]!.attnNorm);
    expect(model.weights.format).toBeUndefined();
  });

  it('Q8_0 / Q4_0: linears arrive as MatMulNBits matrices whose dequantization is the float32 field', async () => {
    for (const [type, bits, format] of [
      ['q8_0', 8, 'int8'],
      ['q4_0', 4, 'int4'],
    ] as const) {
      const model = await loadGgufModel(file(`stories260K-${type}.gguf`));
      const { weights } = model;
      expect(weights.format).toBe(format);
      // ffn_down's rows are 172 long, not whole 32-blocks: written as F16, read as float32.
      expect(model.typeSummary).toMatch(/F16 ×5/);
      for (const [l, layer] of weights.layers.entries()) {
        const quantized = weights.quantizedLayers![l]!;
        expect(Object.keys(quantized).sort()).toEqual(
          LINEAR_WEIGHT_NAMES.filter((n) => n !== 'wDown').sort(),
        );
        for (const name of LINEAR_WEIGHT_NAMES) {
          const m = quantized[name];
          if (!m) continue;
          expect(m).toMatchObject({ bits, blockSize: 32 });
          expect(layer[name]).toEqual(dequantize(m));
        }
      }
      // Round-to-nearest stays close to the source.
      const a = weights.layers[0]!.wq;
      const b = source.weights.layers[0]!.wq;
      const maxDiff = a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
      expect(maxDiff).toBeGreaterThan(0);
      expect(maxDiff).toBeLessThan(bits === 8 ? 0.02 : 0.3);
    }
  });
});

describe('K-quant tensors', () => {
  it('are dequantized with a warning naming them; --weights int8 requantizes them into MatMulNBits', async () => {
    // Rows of 256 values: K-quant super-blocks. Random block bytes are valid codes; only the fp16
    // scales are set, so that no block decodes to NaN.
    const config = syntheticConfig({
      dim: 256,
      hiddenDim: 256,
      numLayers: 1,
      numHeads: 8,
      numKvHeads: 4,
      vocabSize: 320,
    });
    const tokenizerFile = file('tok320.bin');
    writeSyntheticLlama2cTokenizer(tokenizerFile, 320);
    const model: LoadedModel = {
      config,
      weights: syntheticWeights(config, 5),
      tokenizer: Llama2cTokenizer.fromFile(tokenizerFile),
      source: { kind: 'synthetic', id: 'kquant', description: 'synthetic' },
    };
    const contents = modelAsGguf(model, { type: 'f32' });
    const random = new SeededRandom(9);
    const randomBlocks = (blocks: number, blockBytes: number, scaleOffsets: number[]) => {
      const bytes = Uint8Array.from({ length: blocks * blockBytes }, () => Math.floor(random.next() * 256));
      for (let b = 0; b < blocks; b++) {
        for (const at of scaleOffsets)
          [bytes[b * blockBytes + at], bytes[b * blockBytes + at + 1]] = [0x00, 0x1c]; // fp16 2^-8
      }
      return bytes;
    };
    const down = contents.tensors.find((t) => t.name === 'blk.0.ffn_down.weight')!;
    Object.assign(down, { type: GGMLQuantizationType.Q6_K, data: randomBlocks(256, 210, [208]) });
    const gate = contents.tensors.find((t) => t.name === 'blk.0.ffn_gate.weight')!;
    Object.assign(gate, { type: GGMLQuantizationType.Q4_K, data: randomBlocks(256, 144, [0, 2]) });
    writeGgufFile(file('kquant.gguf'), contents.metadata, contents.tensors);

    const loaded = await loadGgufModel(file('kquant.gguf'));
    expect(loaded.typeSummary).toBe('F32 ×10, Q4_K ×1, Q6_K ×1');
    expect(loaded.warnings).toEqual([
      expect.stringMatching(/^blk\.0\.ffn_gate\.weight is Q4_K \(12\): dequantized to float32/),
      expect.stringMatching(/^blk\.0\.ffn_down\.weight is Q6_K \(14\): dequantized to float32/),
    ]);
    const layer = loaded.weights.layers[0]!;
    expect(layer.wDown).toEqual(decodeToFloat32(GGMLQuantizationType.Q6_K, down.data, 256 * 256));
    expect(layer.wGate).toEqual(decodeToFloat32(GGMLQuantizationType.Q4_K, gate.data, 256 * 256));
    expect(loaded.weights.quantizedLayers).toBeUndefined();

    const gguf: LoadedModel = { ...model, config: loaded.config, weights: loaded.weights };
    const int8 = withWeightOptions(gguf, parseWeightFlags({ weights: 'int8' }));
    const requantized = int8.weights.quantizedLayers![0]!.wDown!;
    expect(requantized).toMatchObject({ bits: 8, blockSize: 32 });
    const back = dequantize(requantized);
    const maxDiff = back.reduce((m, v, i) => Math.max(m, Math.abs(v - layer.wDown[i]!)), 0);
    const maxAbs = layer.wDown.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    expect(maxDiff).toBeLessThanOrEqual(maxAbs / 127);
  });
});

describe('GGUF with a "gpt2" (byte-level BPE) vocabulary', () => {
  it('loads with a tokenizer built from its tokens, merges and tokenizer.ggml.pre', async () => {
    const contents = modelAsGguf(source, { type: 'f32' });
    // GPT-2's byte symbols for printable ASCII are the characters themselves; space is "Ġ".
    const tokens = [
      '<|begin_of_text|>',
      '<|end_of_text|>',
      'Ġ',
      ...'Onceuptimaw'.split(''),
      'On',
      'Onc',
      'Once',
    ];
    Object.assign(contents.metadata, {
      'tokenizer.ggml.model': { type: 'string', value: 'gpt2' },
      'tokenizer.ggml.pre': { type: 'string', value: 'llama-bpe' },
      'tokenizer.ggml.tokens': { type: 'string[]', value: tokens },
      'tokenizer.ggml.token_type': { type: 'i32[]', value: tokens.map((_, i) => (i < 2 ? 3 : 1)) },
      'tokenizer.ggml.merges': { type: 'string[]', value: ['O n', 'On c', 'Onc e'] },
      'tokenizer.ggml.bos_token_id': { type: 'u32', value: 0 },
      'tokenizer.ggml.eos_token_id': { type: 'u32', value: 1 },
      'tokenizer.ggml.add_bos_token': { type: 'bool', value: true },
    });
    delete contents.metadata['tokenizer.ggml.scores'];
    delete contents.metadata['tokenizer.ggml.eot_token_id'];
    writeGgufFile(file('gpt2-vocab.gguf'), contents.metadata, contents.tensors);
    const model = await loadModel({ model: file('gpt2-vocab.gguf') });
    expect(model.config).toMatchObject({ bosTokenId: 0, eosTokenIds: [1] });
    const ids = model.tokenizer.encode('Once up', { addBos: true });
    expect(ids.map((i) => model.tokenizer.tokenText(i))).toEqual([
      '<|begin_of_text|>',
      'Once',
      'Ġ',
      'u',
      'p',
    ]);
    expect(model.tokenizer.decode(ids)).toBe('Once up');
  });
});

describe('an HF byte-level BPE (Llama 3 style) written as a GGUF "gpt2" vocabulary', () => {
  it('tokenizes as the tokenizer.json it came from', async () => {
    const dir = file('llama3-style');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(llama3StyleTokenizerJson()));
    fs.writeFileSync(
      path.join(dir, 'tokenizer_config.json'),
      JSON.stringify({ bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>', add_bos_token: true }),
    );
    const hfTokenizer = HfTokenizer.fromDir(dir);
    const config = syntheticConfig({ numLayers: 1, vocabSize: TEST_TOKENS.length });
    const model: LoadedModel = {
      config: { ...config, bosTokenId: hfTokenizer.bosTokenId, eosTokenIds: [...hfTokenizer.eosTokenIds] },
      weights: syntheticWeights(config, 3),
      tokenizer: hfTokenizer,
      source: { kind: 'huggingface', id: 'llama3-style', path: dir, description: 'test' },
    };
    writeModelAsGguf(file('llama3-style.gguf'), model, { type: 'f32' });
    const gguf = await loadModel({ model: file('llama3-style.gguf') });
    expect(gguf.tokenizer).toBeInstanceOf(HfTokenizer); // read back as "gpt2" with pre "llama-bpe"
    expect(gguf.config).toMatchObject({
      bosTokenId: hfTokenizer.bosTokenId,
      eosTokenIds: [...hfTokenizer.eosTokenIds],
    });
    for (const text of ['the the 12345', 'héllo 😀\n\n  the<|eot_id|>', '']) {
      const ids = gguf.tokenizer.encode(text, { addBos: true });
      expect(ids).toEqual(hfTokenizer.encode(text, { addBos: true }));
      expect(gguf.tokenizer.decode(ids)).toBe(hfTokenizer.decode(ids));
    }
  });
});

describe('GGUF errors name what they cannot take', () => {
  const broken = (name: string, edit: (g: ReturnType<typeof modelAsGguf>) => void) => {
    const contents = modelAsGguf(source, { type: 'f32' });
    edit(contents);
    writeGgufFile(file(name), contents.metadata, contents.tensors);
    return file(name);
  };

  it('another architecture', async () => {
    const gguf = broken('qwen.gguf', (g) => {
      g.metadata['general.architecture'] = { type: 'string', value: 'qwen2' };
    });
    await expectLoadError(gguf, 'DS_UNSUPPORTED', /architecture "qwen2" is not supported; only "llama"/);
  });

  it('a tensor type it has no decoder for', async () => {
    const gguf = broken('iq2.gguf', (g) => {
      const t = g.tensors.find((x) => x.name === 'blk.3.ffn_up.weight')!;
      t.type = GGMLQuantizationType.IQ2_XS;
    });
    await expectLoadError(gguf, 'DS_UNSUPPORTED', /tensor blk\.3\.ffn_up\.weight has type IQ2_XS \(17\)/);
  });

  it('Llama 3.1 RoPE frequency factors (rope_freqs.weight), which it would otherwise ignore', async () => {
    const gguf = broken('rope-freqs.gguf', (g) => {
      g.tensors.push({
        name: 'rope_freqs.weight',
        dims: [4],
        type: GGMLQuantizationType.F32,
        data: new Uint8Array(16),
      });
    });
    await expectLoadError(
      gguf,
      'DS_UNSUPPORTED',
      /tensor rope_freqs\.weight \(Llama 3\.1-style RoPE frequency factors\)/,
    );
  });

  it('a missing tensor and a tensor of the wrong shape', async () => {
    const missing = broken('missing.gguf', (g) => {
      g.tensors = g.tensors.filter((x) => x.name !== 'blk.1.attn_k.weight');
    });
    await expectLoadError(missing, 'DS_MODEL_LOAD', /GGUF has no tensor blk\.1\.attn_k\.weight/);
    const misshapen = broken('shape.gguf', (g) => {
      g.tensors.find((x) => x.name === 'blk.0.attn_v.weight')!.dims = [32, 64];
    });
    await expectLoadError(
      misshapen,
      'DS_MODEL_LOAD',
      /tensor blk\.0\.attn_v\.weight has shape \[32, 64\], the config implies \[64, 32\]/,
    );
  });

  it('add_bos_token and add_space_prefix false are honoured', async () => {
    const gguf = broken('no-bos.gguf', (g) => {
      g.metadata['tokenizer.ggml.add_bos_token'] = { type: 'bool', value: false };
      g.metadata['tokenizer.ggml.add_space_prefix'] = { type: 'bool', value: false };
    });
    const { tokenizer } = await loadGgufModel(gguf);
    const plain = source.tokenizer.encode('Once upon a time');
    // No BOS, and "Once" without the leading-space piece tokenizes differently.
    const ids = tokenizer.encode('Once upon a time', { addBos: true });
    expect(ids[0]).not.toBe(1);
    expect(ids).not.toEqual(plain);
    expect(tokenizer.encode(' Once upon a time', { addBos: true })).toEqual(plain);
  });

  it('a vocabulary type it does not know, a "gpt2" one without merges, missing metadata, not GGUF', async () => {
    const wordPiece = broken('bert-vocab.gguf', (g) => {
      g.metadata['tokenizer.ggml.model'] = { type: 'string', value: 'bert' };
    });
    await expectLoadError(wordPiece, 'DS_UNSUPPORTED', /tokenizer\.ggml\.model "bert" is not supported/);
    const bpe = broken('bpe.gguf', (g) => {
      g.metadata['tokenizer.ggml.model'] = { type: 'string', value: 'gpt2' };
    });
    await expectLoadError(bpe, 'DS_MODEL_LOAD', /a "gpt2" vocabulary without tokenizer\.ggml\.merges/);
    const noDim = broken('nodim.gguf', (g) => {
      delete g.metadata['llama.embedding_length'];
    });
    await expectLoadError(noDim, 'DS_MODEL_LOAD', /GGUF metadata has no llama\.embedding_length/);
    fs.writeFileSync(file('fake.gguf'), 'not a gguf at all');
    await expectLoadError(file('fake.gguf'), 'DS_MODEL_LOAD', /not a GGUF file/);
  });
});

describeWithAssets(
  [LLAMA2C_TOKENIZER, TINYSTORIES_EVAL],
  'GGUF vocabulary of the 32000-token Llama 2 tokenizer',
  () => {
    it('encodes the eval stories exactly as llama2.c tokenizer.bin does', () => {
      const original = Llama2cTokenizer.fromFile(LLAMA2C_TOKENIZER.path);
      const vocab = llama2cVocabularyAsGguf(original);
      expect(vocab.tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
      expect(vocab.tokens).toContain('▁the');
      const gguf = tokenizerFromGguf(
        {
          model: 'llama',
          tokens: vocab.tokens,
          scores: vocab.scores,
          tokenTypes: vocab.types,
          bosTokenId: 1,
          eosTokenId: 2,
        },
        'test',
      );
      const stories = fs.readFileSync(TINYSTORIES_EVAL.path, 'utf8').split('\n<|endoftext|>\n').slice(0, 200);
      for (const text of [...TEXTS, ...stories]) {
        const ids = gguf.encode(text, { addBos: true });
        expect(ids).toEqual(original.encode(text, { addBos: true }));
        expect(gguf.decode(ids)).toBe(original.decode(ids));
      }
    });
  },
);
