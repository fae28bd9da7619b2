import { z } from 'zod';
import { DropserveError } from '../../engine/errors.ts';
import type { ExperimentArm } from './experiment-router.ts';

/**
 * The body of `POST /v1/experiments/{name}`: either the arms in order,
 *   {"arms": [{"variant": "m", "weight": 1}, {"variant": "m:attn-2", "weight": 1}]}
 * or a weight per variant,
 *   {"weights": {"m": 1, "m:attn-2": 1}}
 * Either may name the arm the others are compared with: "control": "m" (default: the full model).
 * Whether the variants exist and the weights are usable is the router's to check (one place).
 */
const weight = z.number('must be a number').finite('must be finite').nonnegative('must be ≥ 0');

const control = z.string().min(1, 'must not be empty').optional();

const armsBody = z.strictObject({
  control,
  arms: z
    .array(z.strictObject({ variant: z.string().min(1, 'must not be empty'), weight }))
    .min(1, 'needs at least one arm')
    .max(64, 'at most 64 arms'),
});

const weightsBody = z.strictObject({
  control,
  weights: z
    .record(z.string().min(1), weight)
    .refine((w) => Object.keys(w).length > 0, 'needs at least one variant')
    .refine((w) => Object.keys(w).length <= 64, 'at most 64 variants'),
});

const experimentBody = z.union([armsBody, weightsBody]);

// The name is a model id clients send; it is never a metrics label value.
const EXPERIMENT_NAME = /^[A-Za-z0-9][\w.:/-]{0,127}$/;

export function checkExperimentName(name: string): string {
  if (!EXPERIMENT_NAME.test(name)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `experiment name "${name}" must be 1–128 letters, digits, ".", "_", "-", ":" or "/", starting with a letter or digit`,
      { param: 'name' },
    );
  }
  return name;
}

/** Parses a POST body into arms; the first problem becomes DS_INVALID_ARGUMENT naming its field. */
export function parseExperimentBody(raw: unknown): ExperimentArm[] {
  return parseExperimentDefinition(raw).arms;
}

/** The arms and the optional control arm of a POST body. */
export function parseExperimentDefinition(raw: unknown): { arms: ExperimentArm[]; control?: string } {
  if (typeof raw === 'object' && raw !== null && 'arms' in raw && 'weights' in raw) {
    throw new DropserveError('DS_INVALID_ARGUMENT', 'give either "arms" or "weights", not both', {
      param: 'weights',
    });
  }
  const result = experimentBody.safeParse(raw);
  if (!result.success) {
    const issue = pickIssue(raw, result.error.issues);
    const path = issue.path.map(String).join('.');
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `${path === '' ? 'body' : path}: ${issue.message}. Expected {"arms":[{"variant":"…","weight":1}]} or {"weights":{"variant":1}}`,
      { param: path === '' ? undefined : path },
    );
  }
  const body = result.data;
  const arms =
    'arms' in body
      ? body.arms.map((a) => ({ variant: a.variant, weight: a.weight }))
      : Object.entries(body.weights).map(([variant, w]) => ({ variant, weight: w }));
  return body.control === undefined ? { arms } : { arms, control: body.control };
}

/** A union's error is "no member matched"; the member the body tried to be explains it better. */
function pickIssue(raw: unknown, issues: z.core.$ZodIssue[]): { path: PropertyKey[]; message: string } {
  const tried = typeof raw === 'object' && raw !== null && 'weights' in raw ? weightsBody : armsBody;
  const own = tried.safeParse(raw);
  const issue = own.success ? issues[0] : own.error.issues[0];
  return { path: issue?.path ?? [], message: issue?.message ?? 'invalid' };
}
