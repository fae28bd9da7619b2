import { getTextOrNull } from './get-text.ts';

/** Model ids from GET /v1/models (OpenAI list shape), or null when the server does not answer. */
export async function fetchModelIds(
  baseUrl: string,
  apiKey?: string,
  timeoutMs = 5000,
): Promise<string[] | null> {
  const text = await getTextOrNull(baseUrl, '/v1/models', apiKey, timeoutMs);
  if (text === null) return null;
  try {
    const body = JSON.parse(text) as { data?: { id?: unknown }[] };
    if (!Array.isArray(body.data)) return null;
    return body.data.map((m) => m.id).filter((id): id is string => typeof id === 'string');
  } catch {
    return null;
  }
}
