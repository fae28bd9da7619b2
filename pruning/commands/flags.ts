/** Flag parsing and output plumbing shared by the `prune` subcommands (cli/prune.ts dispatches). */
import type { ParseArgsConfig } from 'node:util';
import { parseArgs } from 'node:util';
import { DropserveError } from '../../engine/errors.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import type { WorkspaceOptions } from '../workspace.ts';
import { DEFAULT_SAMPLES, DEFAULT_SEQ_LEN } from '../workspace.ts';

/** Where output goes; tests pass their own. */
export interface PruneIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Progress bars on stderr (default: when stderr is a terminal). */
  showProgress?: boolean;
}

export const COMMON_OPTIONS = {
  model: { type: 'string' },
  tokenizer: { type: 'string' },
  data: { type: 'string' },
  threads: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

export const CALIBRATION_OPTIONS = {
  samples: { type: 'string' },
  'seq-len': { type: 'string' },
  permutations: { type: 'string' },
  seed: { type: 'string' },
} as const;

export type FlagValues = Record<string, string | boolean | undefined>;

export function parseFlags(
  argv: string[],
  options: NonNullable<ParseArgsConfig['options']>,
  sub: string,
): FlagValues {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (e) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `prune ${sub}: ${(e as Error).message} (see dropserve prune ${sub} --help)`,
    );
  }
}

export function requireFlag(value: string | undefined, flag: string, sub: string): string {
  if (value === undefined || value === '') {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `prune ${sub}: --${flag} is required (see dropserve prune ${sub} --help)`,
      {
        param: flag,
      },
    );
  }
  return value;
}

export function integerFlag(value: string | undefined, flag: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--${flag} must be an integer ≥ ${min}, got "${value}"`, {
      param: flag,
    });
  }
  return n;
}

export function layerListFlag(value: string | undefined, flag: string): number[] {
  if (value === undefined || value.trim() === '' || value === 'none') return [];
  return value.split(',').map((part) => {
    const n = Number(part.trim());
    if (part.trim() === '' || !Number.isInteger(n) || n < 0) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--${flag}: "${part}" is not a layer index (expected e.g. 1,3)`,
        {
          param: flag,
        },
      );
    }
    return n;
  });
}

/** openWorkspace options from COMMON_OPTIONS + CALIBRATION_OPTIONS: analyze and plan open the same workspace. */
export function calibrationWorkspaceOptions(
  flags: FlagValues,
  data: string,
  io: PruneIo,
  signal: AbortSignal,
): WorkspaceOptions {
  return {
    model: flags.model as string | undefined,
    tokenizer: flags.tokenizer as string | undefined,
    data,
    samples: integerFlag(flags.samples as string | undefined, 'samples', DEFAULT_SAMPLES, 1),
    seqLen: integerFlag(flags['seq-len'] as string | undefined, 'seq-len', DEFAULT_SEQ_LEN, 2),
    threads: integerFlag(flags.threads as string | undefined, 'threads', 1, 1),
    hiddenStates: true,
    signal,
    onMessage: (m) => io.stderr(`${m}\n`),
  };
}

/** --permutations / --seed of the Shapley search: analyze and plan accept the same bounds and defaults. */
export function shapleyFlags(flags: FlagValues): { permutations: number; seed: number } {
  return {
    permutations: integerFlag(flags.permutations as string | undefined, 'permutations', 16, 1),
    seed: integerFlag(flags.seed as string | undefined, 'seed', 0),
  };
}

export function modelInfo(model: LoadedModel): { id: string; path?: string; num_layers: number } {
  return {
    id: model.source.id,
    ...(model.source.path ? { path: model.source.path } : {}),
    num_layers: model.config.numLayers,
  };
}
