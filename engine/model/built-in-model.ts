import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { modelLoadError } from '../errors.ts';

/**
 * The model served when `--model` is not given: Karpathy's stories260K (MIT), shipped in the
 * package's `models/` folder so that `npm start` tells a story out of the box.
 */

export const BUILT_IN_MODEL_ID = 'stories260K';
const BUILT_IN_RELATIVE_PATH = path.join('models', 'stories260K', 'stories260K.bin');

/**
 * Found by walking up from this module rather than from the working directory, so the default works
 * from any cwd, from an npm-installed package, and from a compiled copy of the sources one level
 * deeper (e.g. dist/engine/model).
 */
export function builtInModelPath(): string {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, BUILT_IN_RELATIVE_PATH);
    if (fs.existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) break;
  }
  throw modelLoadError(
    BUILT_IN_RELATIVE_PATH,
    `the built-in default model is missing from this installation (looked above ${start}); ` +
      'pass --model PATH, or --model synthetic for the random-weight model',
  );
}
