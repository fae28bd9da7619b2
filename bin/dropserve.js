#!/usr/bin/env node
// Entry shim. Runs the compiled CLI in dist/ (scripts/build.mjs; `npm ci` builds it through the
// `prepare` script) when it is a build of the current sources, and the TypeScript sources through
// tsx's loader otherwise, so an edited checkout never runs stale code. The compiled CLI starts the
// compiled engine worker; the sources start the worker through tsx (engine/worker/bootstrap.mjs).
//
// DROPSERVE_RUN_FROM=source forces tsx, =dist forces dist/ (and fails if it is stale): the start-up
// benchmark compares the two.
import { fileURLToPath } from 'node:url';
import { checkCompiledBuild } from './compiled-build.js';

const root = new URL('../', import.meta.url);
const runFrom = process.env.DROPSERVE_RUN_FROM ?? 'auto';
if (!['auto', 'source', 'dist'].includes(runFrom)) {
  console.error(`dropserve: DROPSERVE_RUN_FROM must be auto, source or dist, got "${runFrom}"`);
  process.exit(2);
}
const build =
  runFrom === 'source'
    ? null
    : checkCompiledBuild(fileURLToPath(root), fileURLToPath(new URL('dist/', root)));

if (build?.fresh) {
  await import(new URL('dist/cli/main.js', root).href);
} else {
  if (runFrom === 'dist') {
    console.error(
      `dropserve: DROPSERVE_RUN_FROM=dist but dist/ is not usable: ${build?.reason}; run npm run build`,
    );
    process.exit(2);
  }
  // A build that exists but lags the sources is worth a word: starts are slower until it is redone.
  if (build && !build.reason.startsWith('no build')) {
    console.error(
      `dropserve: running the sources through tsx, dist/ is stale (${build.reason}); npm run build to start faster`,
    );
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
