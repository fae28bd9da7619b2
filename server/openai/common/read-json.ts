import type { Context } from 'hono';
import type { AppEnv } from '../../http/env.ts';
import { invalidRequest } from '../../http/errors.ts';

/** The body as JSON; a 400 (not a 500) when it is not JSON. Bytes that are not UTF-8 decode to U+FFFD. */
export async function readJsonBody(c: Context<AppEnv>): Promise<unknown> {
  let text: string;
  try {
    text = await c.req.text();
  } catch (e) {
    throw invalidRequest(`could not read the request body (${(e as Error).message})`);
  }
  if (text.trim() === '') throw invalidRequest('the request body is empty; send a JSON object');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidRequest(`the request body is not valid JSON (${(e as Error).message})`);
  }
}
