import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DropserveError } from '../errors.ts';

/**
 * Local Hugging Face hub cache lookup (never downloads). Layout written by huggingface_hub:
 *
 *   <hub>/models--<org>--<name>/refs/main            commit hash of the "main" revision
 *   <hub>/models--<org>--<name>/snapshots/<commit>/  files (symlinks into blobs/)
 *
 * <hub> is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub.
 */

const HF_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;

export function hfHubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return path.join(env.HF_HOME, 'hub');
  const cacheHome = env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(cacheHome, 'huggingface', 'hub');
}

/** "org/name" shaped, and not an existing path (a relative path like "models/foo" wins). */
export function looksLikeHfId(value: string): boolean {
  return HF_ID.test(value) && !value.includes('..') && !fs.existsSync(value);
}

/**
 * Snapshot directory of a cached model: the commit `refs/main` points to, else the most recently
 * modified snapshot. Throws DS_MODEL_LOAD naming the directory it looked in.
 */
export function findCachedModel(id: string, options: { cacheDir?: string; revision?: string } = {}): string {
  const hub = options.cacheDir ?? hfHubCacheDir();
  const repoDir = path.join(hub, `models--${id.split('/').join('--')}`);
  const snapshots = path.join(repoDir, 'snapshots');
  const notFound = (why: string) =>
    new DropserveError(
      'DS_MODEL_LOAD',
      `model "${id}" is not a local path and ${why} (looked in ${repoDir}; hub cache ${hub}, set by ` +
        `HF_HUB_CACHE / HF_HOME). dropserve never downloads: fetch it first, e.g. \`huggingface-cli download ${id}\``,
    );
  if (!fs.existsSync(snapshots)) throw notFound('is not in the local Hugging Face cache');
  const revision = options.revision ?? 'main';
  const refFile = path.join(repoDir, 'refs', revision);
  const commit = fs.existsSync(refFile) ? fs.readFileSync(refFile, 'utf8').trim() : undefined;
  if (commit && fs.existsSync(path.join(snapshots, commit))) return path.join(snapshots, commit);
  const candidates = fs
    .readdirSync(snapshots, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => path.join(snapshots, e.name))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (candidates.length === 0) throw notFound('has no snapshot in the local Hugging Face cache');
  return candidates[0]!;
}
