import { request } from 'undici';
import { apiUrl } from './openai-stream.ts';

/**
 * The body of GET `path` on the server, or null when it does not answer 200 within `timeoutMs`
 * (probes of a server that may be busy or gone must not fail the run).
 */
export async function getTextOrNull(
  baseUrl: string,
  path: string,
  apiKey?: string,
  timeoutMs = 5000,
): Promise<string | null> {
  try {
    const response = await request(apiUrl(baseUrl, path), {
      method: 'GET',
      headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.statusCode !== 200) {
      await response.body.dump();
      return null;
    }
    return await response.body.text();
  } catch {
    return null;
  }
}
