import { createHash } from 'node:crypto';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DropserveError } from '../../engine/errors.ts';
import { checkExperimentName, parseExperimentDefinition } from './experiment-body.ts';
import type { ExperimentArm } from './experiment-router.ts';
import { type Guardrail, parseGuardrail } from './guardrails.ts';

/**
 * `--experiments-file FILE`: the experiments every replica serves, from one file they all mount (a
 * Kubernetes ConfigMap). JSON, or YAML for any other extension:
 *
 *   experiments:
 *     - name: prune-ab
 *       control: stories260K
 *       arms: [{variant: stories260K, weight: 50}, {variant: "stories260K:attn-2", weight: 50}]
 *       guardrails: ["agreement>=0.85"]
 *
 * Each entry is the admin API's POST body (`arms` or `weights`, optional `control`) plus its `name`
 * and `guardrails` in the --experiment-guardrail syntax. Routing is a pure function of this content
 * and the request's `user`, so replicas that read the same bytes send a user to the same arm.
 */
export interface FileExperiment {
  name: string;
  arms: ExperimentArm[];
  control?: string;
  guardrails: Guardrail[];
}

export interface ExperimentsFileContent {
  experiments: FileExperiment[];
  /** First 16 hex digits of the SHA-256 of the file's bytes: equal on replicas that read the same file. */
  version: string;
}

const fileSchema = z.strictObject({
  experiments: z.array(
    z.looseObject({
      name: z.string('must be a string'),
      guardrails: z.array(z.string('must be a string')).optional(),
    }),
    'must be a list',
  ),
});

export function experimentsFileVersion(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Parses and checks the file's text; every problem is DS_INVALID_ARGUMENT naming where it is. */
export function parseExperimentsFile(text: string, path: string): ExperimentsFileContent {
  let raw: unknown;
  try {
    raw = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `${path}: not valid ${formatOf(path)}: ${firstLine(error)}`,
    );
  }
  // An empty file (or `experiments: []`) is a valid way to say "no experiments".
  if (raw === null || raw === undefined) return { experiments: [], version: experimentsFileVersion(text) };
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.map(String).join('.');
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `${path}: ${where === '' ? 'top level' : where}: ${issue.message}; expected {"experiments": [{"name", "arms" | "weights", "control"?, "guardrails"?}]}`,
    );
  }
  const seen = new Set<string>();
  const experiments = parsed.data.experiments.map((entry, i): FileExperiment => {
    const { name, guardrails, ...body } = entry;
    const where = `${path}: experiments.${i} (${name})`;
    try {
      checkExperimentName(name);
      if (seen.has(name)) throw new DropserveError('DS_INVALID_ARGUMENT', 'the name appears twice');
      seen.add(name);
      const { arms, control } = parseExperimentDefinition(body);
      return {
        name,
        arms,
        ...(control === undefined ? {} : { control }),
        guardrails: (guardrails ?? []).map(parseGuardrail),
      };
    } catch (error) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `${where}: ${(error as Error).message}`);
    }
  });
  return { experiments, version: experimentsFileVersion(text) };
}

const formatOf = (path: string): string => (extname(path).toLowerCase() === '.json' ? 'JSON' : 'YAML');

function firstLine(error: unknown): string {
  return String((error as Error).message ?? error).split('\n')[0]!;
}
