import type { Context } from 'hono';
import type { AppEnv } from '../../http/env.ts';
import { invalidRequest } from '../../http/errors.ts';

const utf8 = new TextDecoder('utf-8', { fatal: false });

/** The body as JSON; a 400 (not a 500) when it is not JSON. Bytes that are not UTF-8 decode to U+FFFD. */
export function readJsonBody(c: Context<AppEnv>): unknown {
  const bytes = c.get('body');
  const text = bytes === undefined ? '' : utf8.decode(bytes);
  if (text.trim() === '') throw invalidRequest('the request body is empty; send a JSON object');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidRequest(`the request body is not valid JSON (${(e as Error).message})`);
  }
}
