import { request } from 'undici';
import { apiUrl } from './openai-stream.ts';

/** Model ids from GET /v1/models (OpenAI list shape), or null when the server does not answer. */
export async function fetchModelIds(
  baseUrl: string,
  apiKey?: string,
  timeoutMs = 5000,
): Promise<string[] | null> {
  try {
    const response = await request(apiUrl(baseUrl, '/v1/models'), {
      method: 'GET',
      headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {},
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (response.statusCode !== 200) {
      await response.body.dump();
      return null;
    }
    const body = (await response.body.json()) as { data?: { id?: unknown }[] };
    if (!Array.isArray(body.data)) return null;
    return body.data.map((m) => m.id).filter((id): id is string => typeof id === 'string');
  } catch {
    return null;
  }
}
