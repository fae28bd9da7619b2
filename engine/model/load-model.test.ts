import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  itWithAssets,
  LLAMA2C_TOKENIZER,
  STORIES_260K,
  TINYSTORIES_656K,
  TOK512,
} from '../../tests/support/shared-assets.ts';
import { rejectionOf } from '../testing/expect-dropserve-error.ts';
import { findCachedModel, hfHubCacheDir, looksLikeHfId } from './hf-cache.ts';
import { exportHuggingFaceDir } from './hf-export.ts';
import { loadModel } from './load-model.ts';
import { syntheticModel } from './synthetic.ts';

const STORIES_BIN = STORIES_260K;
const TOK32K = LLAMA2C_TOKENIZER.path;
const TINY = TINYSTORIES_656K.path;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-load-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A directory of symlinks to shared model files (as the HF cache lays out snapshots). */
function linkDir(dir: string, files: Record<string, string>): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, target] of Object.entries(files)) fs.symlinkSync(target, path.join(dir, name));
  return dir;
}

describe('loadModel', () => {
  it('without --model loads the built-in stories260K shipped in models/, whatever the cwd', async () => {
    const lines: string[] = [];
    const shipped = fileURLToPath(new URL('../../models/stories260K/stories260K.bin', import.meta.url));
    const cwd = process.cwd();
    process.chdir(os.tmpdir());
    let model: Awaited<ReturnType<typeof loadModel>>;
    try {
      model = await loadModel({ onProgress: (m) => lines.push(m) });
    } finally {
      process.chdir(cwd);
    }
    expect(model.source).toMatchObject({ kind: 'llama2c', id: 'stories260K', path: shipped, builtIn: true });
    expect(model.source.description).toMatch(/^built-in default: llama2\.c checkpoint stories260K\.bin/);
    expect(model.config.numLayers).toBe(5);
    expect(model.tokenizer.vocabSize).toBe(512);
    expect(lines[0]).toContain('no --model given, loading the built-in default stories260K');
  });

  it('--model synthetic and synthetic:SEED give the random-weight model, named by its seed', async () => {
    const lines: string[] = [];
    const model = await loadModel({ model: 'synthetic', onProgress: (m) => lines.push(m) });
    expect(model.source).toMatchObject({ kind: 'synthetic', id: 'synthetic' });
    expect(model.source.builtIn).toBeUndefined();
    expect(model.config.numLayers).toBe(6);
    expect(lines[0]).toContain('not a trained model');
    const seeded = await loadModel({ model: 'synthetic:42' });
    expect(seeded.source.id).toBe('synthetic-42');
    expect(seeded.weights.tokenEmbedding).not.toEqual(model.weights.tokenEmbedding);
    expect((await loadModel({ model: 'synthetic:1234' })).weights.tokenEmbedding).toEqual(
      model.weights.tokenEmbedding,
    );
  });

  it.each(['synthetic:', 'synthetic:abc', 'synthetic:-1', 'synthetic:1.5', 'synthetic:4294967296'])(
    'refuses %s naming the seed range',
    async (spec) => {
      const e = await rejectionOf(loadModel({ model: spec }));
      expect(e.code).toBe('DS_INVALID_ARGUMENT');
      expect(e.message).toContain('0..4294967295');
    },
  );

  it('loads a llama2.c checkpoint with the tokenizer beside it', async () => {
    const lines: string[] = [];
    const model = await loadModel({ model: STORIES_BIN, onProgress: (m) => lines.push(m) });
    expect(model.source).toMatchObject({ kind: 'llama2c', id: 'stories260K', path: STORIES_BIN });
    expect(model.tokenizer.vocabSize).toBe(512);
    expect(model.tokenizer.encode('Once upon a time', { addBos: true })).toEqual([1, 403, 407, 261, 378]);
    expect(lines.some((l) => l.includes('5 layers'))).toBe(true);
  });

  itWithAssets(
    [LLAMA2C_TOKENIZER],
    'prefers the tokenizer whose vocab matches when several sit beside the checkpoint',
    async () => {
      const dir = linkDir(path.join(tmp, 'two-tokenizers'), {
        'stories260K.bin': STORIES_BIN,
        'tok512.bin': TOK512,
        'tokenizer.bin': TOK32K,
      });
      const model = await loadModel({ model: path.join(dir, 'stories260K.bin') });
      expect(model.tokenizer.vocabSize).toBe(512);
    },
  );

  it('asks for --tokenizer when no tokenizer sits beside the checkpoint', async () => {
    const dir = linkDir(path.join(tmp, 'lonely'), { 'model.bin': STORIES_BIN });
    const e = await rejectionOf(loadModel({ model: path.join(dir, 'model.bin') }));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toContain('pass --tokenizer');
    expect(e.message).toContain('no tok*.bin or tokenizer.bin there');
  });

  itWithAssets(
    [LLAMA2C_TOKENIZER],
    'refuses a tokenizer with more tokens than the model, giving both numbers',
    async () => {
      const e = await rejectionOf(loadModel({ model: STORIES_BIN, tokenizer: TOK32K }));
      expect(e.code).toBe('DS_MODEL_LOAD');
      expect(e.message).toContain('tokenizer has 32000 tokens but the model');
      expect(e.message).toContain('vocabulary is 512');
    },
  );

  itWithAssets([TINYSTORIES_656K], 'loads a Hugging Face directory, named after the directory', async () => {
    const model = await loadModel({ model: TINY });
    expect(model.source).toMatchObject({ kind: 'huggingface', id: 'tinystories-656K' });
    expect(model.tokenizer.bosTokenId).toBe(1);
    expect(model.config.tieWordEmbeddings).toBe(true);
  });

  itWithAssets(
    [TINYSTORIES_656K],
    'stops on the tokenizer’s EOS token (tokenizer_config.json) when neither config file names one',
    async () => {
      const dir = path.join(tmp, 'eos-from-tokenizer');
      const { eos_token_id: _dropped, ...config } = JSON.parse(
        fs.readFileSync(path.join(TINY, 'config.json'), 'utf8'),
      );
      linkDir(dir, {
        'model.safetensors': path.join(TINY, 'model.safetensors'),
        'tokenizer.json': path.join(TINY, 'tokenizer.json'),
        'tokenizer_config.json': path.join(TINY, 'tokenizer_config.json'),
      });
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
      const model = await loadModel({ model: dir });
      expect(model.tokenizer.tokenText(2)).toBe('<|end_story|>');
      expect(model.config.eosTokenIds).toEqual([2]);
    },
  );

  it('loads an exported synthetic Qwen2 directory with a llama2.c tokenizer given by --tokenizer', async () => {
    const synthetic = syntheticModel({ numLayers: 2, hasQkvBias: true, seed: 5 });
    const dir = path.join(tmp, 'qwen2-synthetic');
    exportHuggingFaceDir(dir, synthetic.config, synthetic.weights);
    const model = await loadModel({ model: dir, tokenizer: TOK512 });
    expect(model.config.architecture).toBe('qwen2');
    expect(model.weights.layers[1]!.bq).toEqual(synthetic.weights.layers[1]!.bq);
    expect(model.tokenizer.vocabSize).toBe(512);
  });

  it('names a path that does not exist', async () => {
    const e = await rejectionOf(loadModel({ model: path.join(tmp, 'missing.bin') }));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toContain('missing.bin: no such file or directory');
  });

  it('refuses --tokenizer without --model', async () => {
    expect((await rejectionOf(loadModel({ tokenizer: TOK512 }))).code).toBe('DS_INVALID_ARGUMENT');
  });
});

describe('Hugging Face cache lookup', () => {
  const hub = path.join(tmp, 'hub');
  const savedEnv = { HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_HOME: process.env.HF_HOME };
  beforeEach(() => {
    process.env.HF_HUB_CACHE = hub;
  });
  afterEach(() => {
    for (const [k, v] of Object.entries(savedEnv)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  const repo = path.join(hub, 'models--raincandy-u--TinyStories-656K');
  beforeAll(() => {
    // Snapshots link to the shared model's files; without ../shared they are empty and the test
    // that loads one skips.
    const files = TINYSTORIES_656K.exists
      ? Object.fromEntries(fs.readdirSync(TINY).map((f) => [f, path.join(TINY, f)]))
      : {};
    linkDir(path.join(repo, 'snapshots', 'aaa111'), files);
    linkDir(path.join(repo, 'snapshots', 'bbb222'), files);
    fs.mkdirSync(path.join(repo, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(repo, 'refs', 'main'), 'aaa111');
  });

  it('finds the hub directory from the environment', () => {
    expect(hfHubCacheDir({ HF_HOME: '/x/hf' })).toBe('/x/hf/hub');
    expect(hfHubCacheDir({ HF_HUB_CACHE: '/y', HF_HOME: '/x' })).toBe('/y');
    expect(hfHubCacheDir({ HOME: '/home/u' } as NodeJS.ProcessEnv)).toMatch(/\.cache\/huggingface\/hub$/);
    expect(looksLikeHfId('raincandy-u/TinyStories-656K')).toBe(true);
    expect(looksLikeHfId('../shared/models')).toBe(false);
  });

  itWithAssets([TINYSTORIES_656K], 'loads an org/name id from the snapshot refs/main points to', async () => {
    const model = await loadModel({ model: 'raincandy-u/TinyStories-656K' });
    expect(model.source.id).toBe('raincandy-u/TinyStories-656K');
    expect(model.source.path).toBe(path.join(repo, 'snapshots', 'aaa111'));
    expect(model.config.dim).toBe(128);
  });

  it('falls back to the newest snapshot without a ref', () => {
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(path.join(repo, 'snapshots', 'bbb222'), later, later);
    expect(findCachedModel('raincandy-u/TinyStories-656K', { cacheDir: hub, revision: 'dev' })).toBe(
      path.join(repo, 'snapshots', 'bbb222'),
    );
  });

  it('says where it looked for a model that is not cached, and never downloads', async () => {
    const e = await rejectionOf(loadModel({ model: 'meta-llama/Llama-3.2-1B' }));
    expect(e.code).toBe('DS_MODEL_LOAD');
    expect(e.message).toContain(path.join(hub, 'models--meta-llama--Llama-3.2-1B'));
    expect(e.message).toContain('never downloads');
  });
});
