#!/usr/bin/env node
// Compiles the TypeScript sources into dist/ so that the CLI and the engine worker start without
// tsx transforming ~150 modules at every start. Runs as `npm run build` and as the `prepare` script
// (so `npm ci` in a checkout builds). Tests run on the sources and never need dist/.
//
// One esbuild bundle per entry point (the CLI, the engine worker): relative imports are inlined, so
// no `.ts` import path needs rewriting; packages stay external (native onnxruntime, grpc, pino…) and
// are loaded from node_modules as usual.
//
// Run-time file lookups through `import.meta.url` (proto files, dashboard assets, package.json, the
// built-in model) keep resolving in the source tree: each module's `import.meta.url` is replaced by
// the URL of its source file. dist/ therefore needs no copied assets and no knowledge of which files
// the code reads. dist/build-stamp.json records size and mtime of every bundled source file, which
// bin/dropserve.js compares before running dist/ (stale → it runs the sources through tsx).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = fileURLToPath(new URL('../', import.meta.url));
const { values } = parseArgs({ options: { outdir: { type: 'string' } } });
const outdir = path.resolve(root, values.outdir ?? 'dist');

const ENTRIES = ['cli/main.ts', 'engine/worker/engine-worker.ts'];
const WORKER_ENTRY = 'engine/worker/engine-worker.ts';
/** The module that starts the worker: it learns where the compiled worker is (see worker-engine.ts). */
const WORKER_STARTER = 'engine/worker/worker-engine.ts';

if (!fs.existsSync(path.join(root, ENTRIES[0]))) {
  // A dependency-only install (e.g. the Dockerfile's deps stage copies package files only).
  console.log('dropserve build: no sources here, nothing to build');
  process.exit(0);
}

// Old hashed chunks must not pile up; only a directory this script made is emptied.
if (fs.existsSync(outdir) && fs.readdirSync(outdir).length > 0) {
  if (!fs.existsSync(path.join(outdir, 'build-stamp.json'))) {
    console.error(`dropserve build: ${outdir} is not empty and not an earlier build; not touching it`);
    process.exit(1);
  }
  fs.rmSync(outdir, { recursive: true });
}

const { build } = await import('esbuild');
const outFile = (entry) => path.join(outdir, entry.replace(/\.ts$/, '.js'));

/** import.meta.url → the source file's URL, written relative to the bundle so dist/ can move with the tree. */
function sourceLocationPlugin(bundleFile) {
  return {
    name: 'source-import-meta-url',
    setup(b) {
      b.onLoad({ filter: /\.(ts|mjs|js)$/ }, async (args) => {
        if (args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
        const source = await fs.promises.readFile(args.path, 'utf8');
        if (!source.includes('import.meta.url')) return undefined;
        const relative = path.relative(path.dirname(bundleFile), args.path).split(path.sep).join('/');
        const contents = source.replaceAll(
          'import.meta.url',
          `new URL(${JSON.stringify(relative)}, import.meta.url).href`,
        );
        return { contents, loader: args.path.endsWith('.ts') ? 'ts' : 'js' };
      });
    },
  };
}

const workerFromStarter = path
  .relative(path.dirname(path.join(root, WORKER_STARTER)), outFile(WORKER_ENTRY))
  .split(path.sep)
  .join('/');

const inputs = new Set();
for (const entry of ENTRIES) {
  const bundleFile = outFile(entry);
  const result = await build({
    entryPoints: [path.join(root, entry)],
    // Split at dynamic imports, beside the entry (the import.meta.url rewrite assumes that
    // directory): commands stay lazily loaded, so `--help` or `loadtest` never load onnxruntime.
    outdir: path.dirname(bundleFile),
    entryNames: '[name]',
    chunkNames: '[name]-[hash]',
    splitting: true,
    bundle: true,
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
    define: { __DROPSERVE_COMPILED_WORKER__: JSON.stringify(workerFromStarter) },
    plugins: [sourceLocationPlugin(bundleFile)],
  });
  for (const input of Object.keys(result.metafile.inputs)) inputs.add(input);
}

const stamp = { builtAt: new Date().toISOString(), sources: {} };
for (const input of [...inputs].sort()) {
  const file = path.resolve(process.cwd(), input);
  const stat = fs.statSync(file);
  stamp.sources[path.relative(root, file).split(path.sep).join('/')] = {
    size: stat.size,
    mtimeMs: stat.mtimeMs,
  };
}
fs.writeFileSync(path.join(outdir, 'build-stamp.json'), `${JSON.stringify(stamp, null, 1)}\n`);
console.log(
  `dropserve build: ${ENTRIES.length} bundles, ${inputs.size} source files → ${path.relative(root, outdir) || '.'}`,
);
