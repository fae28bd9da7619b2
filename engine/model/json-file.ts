import fs from 'node:fs';
import { modelLoadError } from '../errors.ts';

/** Parsed JSON object from a model directory file; a DS_MODEL_LOAD error names the file otherwise. */
export function readJsonObject(file: string): Record<string, unknown> {
  if (!fs.existsSync(file)) throw modelLoadError(file, 'no such file');
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw modelLoadError(file, `not valid JSON (${(e as Error).message})`, e);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw modelLoadError(file, 'expected a JSON object at the top level');
  }
  return parsed as Record<string, unknown>;
}

/** The same, or undefined when the file does not exist (optional files like generation_config.json). */
export function readOptionalJsonObject(file: string): Record<string, unknown> | undefined {
  return fs.existsSync(file) ? readJsonObject(file) : undefined;
}

/** HF configs give token ids as a number, a list of numbers, or null. */
export function tokenIdList(value: unknown): number[] {
  if (typeof value === 'number' && Number.isInteger(value)) return [value];
  if (Array.isArray(value))
    return value.filter((v): v is number => typeof v === 'number' && Number.isInteger(v));
  return [];
}
