import { request } from 'undici';
import { apiUrl } from './openai-stream.ts';

/** One replica's answer to GET /v1/experiments/{name}/report. */
export interface FetchedReport {
  source: string;
  report: unknown;
}

/**
 * Fetches an experiment's report from each replica (all at once). Any replica that does not answer
 * 200 fails the whole fetch, naming the URL and the server's error message: a verdict silently
 * missing a replica's traffic would be a different verdict.
 */
export async function fetchExperimentReports(
  urls: readonly string[],
  experiment: string,
  options: { apiKey?: string; timeoutMs?: number } = {},
): Promise<FetchedReport[]> {
  const path = `/v1/experiments/${experiment.split('/').map(encodeURIComponent).join('/')}/report`;
  return Promise.all(
    urls.map(async (url) => {
      let response: Awaited<ReturnType<typeof request>>;
      try {
        response = await request(apiUrl(url, path), {
          method: 'GET',
          headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
          signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
        });
      } catch (error) {
        throw new Error(`${url}: ${(error as Error).message}`);
      }
      const text = await response.body.text();
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw new Error(`${url}: HTTP ${response.statusCode}, not JSON: ${text.slice(0, 200)}`);
      }
      if (response.statusCode !== 200) {
        const message = (body as { error?: { message?: string } }).error?.message ?? text.slice(0, 200);
        throw new Error(`${url}: HTTP ${response.statusCode}: ${message}`);
      }
      return { source: url, report: body };
    }),
  );
}
