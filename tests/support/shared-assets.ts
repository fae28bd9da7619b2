import { existsSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'vitest';

/**
 * Where the tests' real models and data live. stories260K ships in the repository (models/), so
 * suites that need only it always run. The rest sits in ../shared beside the checkout (the
 * development machine and CI have it, a plain clone does not): suites that need it skip, naming
 * the missing path, instead of failing. Paths resolve from this file, not the working directory.
 */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const SHARED_DIR = resolve(REPO_ROOT, '../shared');

export interface Asset {
  /** Absolute path. */
  readonly path: string;
  /** Checked once, when the test file is collected. */
  readonly exists: boolean;
}

function asset(path: string): Asset {
  return { path, exists: existsSync(path) };
}

export const STORIES_260K_DIR = resolve(REPO_ROOT, 'models/stories260K');
/** The trained llama2.c checkpoint (in the repository). */
export const STORIES_260K = resolve(STORIES_260K_DIR, 'stories260K.bin');
/** Its 512-token llama2.c tokenizer (in the repository). */
export const TOK512 = resolve(STORIES_260K_DIR, 'tok512.bin');

/** The trained Hugging Face checkpoint (safetensors, tokenizer.json), from ../shared. */
export const TINYSTORIES_656K = asset(resolve(SHARED_DIR, 'models/tinystories-656K'));
/** llama2.c's 32000-token tokenizer.bin, from ../shared. */
export const LLAMA2C_TOKENIZER = asset(resolve(SHARED_DIR, 'models/llama2c-tokenizer/tokenizer.bin'));
/** Held-out TinyStories text (calibration, perplexity, tokenizer round trips), from ../shared. */
export const TINYSTORIES_EVAL = asset(resolve(SHARED_DIR, 'data/tinystories-eval.txt'));

/** Why a suite needing these assets cannot run, or null when all are present. */
export function missingAssets(...assets: Asset[]): string | null {
  const missing = assets.filter((a) => !a.exists).map((a) => relative(REPO_ROOT, a.path));
  return missing.length === 0 ? null : `skipped: ${missing.join(', ')} not found`;
}

/**
 * describe() when every asset exists; otherwise the same suite, skipped, with the missing paths in
 * its name. The body still runs to collect the tests, so it must read no file outside a test or hook.
 */
export function describeWithAssets(assets: Asset[], name: string, body: () => void): void {
  const reason = missingAssets(...assets);
  if (reason === null) describe(name, body);
  else describe.skip(`${name} [${reason}]`, body);
}

/** it() when every asset exists; otherwise skipped, with the missing paths in its name. */
export function itWithAssets(assets: Asset[], name: string, test: () => Promise<void> | void): void {
  const reason = missingAssets(...assets);
  if (reason === null) it(name, test);
  else it.skip(`${name} [${reason}]`, test);
}
