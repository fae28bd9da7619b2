import type { z } from 'zod';
import { HttpProblem, invalidRequest } from '../../http/errors.ts';

/**
 * OpenAI parameters dropserve knows but does not implement. Sending one is a 400 naming it, never a
 * silent no-op, unless its value is null or the neutral one (e.g. `tools: []`, `best_of: 1`), which
 * asks for nothing. Parameters nobody knows are rejected too (see parseRequest).
 */
export type UnsupportedParams = Record<string, (value: unknown) => boolean>;

/** Neutral-value predicates for UnsupportedParams. */
export const never = (): boolean => false;
export const isEmptyList = (v: unknown): boolean => Array.isArray(v) && v.length === 0;
export const isEmptyObject = (v: unknown): boolean =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0;
export const isValue =
  (expected: unknown): ((v: unknown) => boolean) =>
  (v) =>
    JSON.stringify(v) === JSON.stringify(expected);

/**
 * Validates a parsed JSON body: rejects unsupported and unknown parameters by name, then checks the
 * rest against the schema; the first problem becomes a 400 whose `param` names the field.
 */
export function parseRequest<S extends z.ZodType>(
  schema: S,
  body: unknown,
  unsupported: UnsupportedParams,
): z.infer<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw invalidRequest('the request body must be a JSON object');
  }
  const fields = { ...(body as Record<string, unknown>) };
  const refused = Object.keys(fields).filter((key) => {
    const isNeutral = Object.hasOwn(unsupported, key) ? unsupported[key]! : undefined;
    if (isNeutral === undefined) return false;
    const value = fields[key];
    if (value === null || isNeutral(value)) {
      delete fields[key];
      return false;
    }
    return true;
  });
  if (refused.length > 0) {
    throw new HttpProblem(
      400,
      `Unsupported parameter(s): ${refused.join(', ')} (dropserve does not implement them)`,
      {
        type: 'invalid_request_error',
        code: 'unsupported_parameter',
        param: refused[0],
      },
    );
  }
  const parsed = schema.safeParse(fields);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues;
  const unknown = issues.find((i) => i.code === 'unrecognized_keys');
  if (unknown && unknown.code === 'unrecognized_keys' && unknown.path.length === 0) {
    throw new HttpProblem(400, `Unrecognized request argument(s): ${unknown.keys.join(', ')}`, {
      type: 'invalid_request_error',
      code: 'unknown_parameter',
      param: unknown.keys[0],
    });
  }
  const issue = unknown ?? issues[0]!;
  const param = issue.path.map(String).join('.') || undefined;
  const what =
    issue.code === 'unrecognized_keys' ? `unrecognized field(s) ${issue.keys.join(', ')}` : issue.message;
  throw invalidRequest(param ? `Invalid value for '${param}': ${what}` : what, param);
}
