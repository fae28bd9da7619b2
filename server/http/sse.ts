import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import type { AppEnv } from './env.ts';
import { errorBody, problemOf } from './errors.ts';

/**
 * Server-sent events as OpenAI streams them: `data: <json>\n\n` per chunk, then `data: [DONE]`.
 * An error after the first byte can no longer change the status, so it is sent as one
 * `data: {"error": {...}}` event followed by `data: [DONE]` (vLLM's convention: clients that wait for
 * [DONE] still end cleanly; the openai SDKs raise on the error event). The stream is closed on every
 * path, and the request stays "in flight" (for graceful shutdown) until it is.
 */
export function sseResponse(c: Context<AppEnv>, chunks: AsyncIterable<unknown>): Response {
  const endInFlight = c.get('keepInFlight')();
  const logger = c.get('logger');
  return streamSSE(c, async (stream) => {
    try {
      for await (const chunk of chunks) await stream.writeSSE({ data: JSON.stringify(chunk) });
    } catch (error) {
      const problem = problemOf(error);
      if (problem.isServerFault) logger.error({ err: error }, 'stream failed');
      else logger.info({ status: problem.status, code: problem.code }, 'stream ended with an error');
      await stream.writeSSE({ data: JSON.stringify(errorBody(problem)) });
    } finally {
      await stream.writeSSE({ data: '[DONE]' });
      endInFlight();
      logger.debug(
        { ms: Math.round(performance.timeOrigin + performance.now() - c.get('receivedMs')) },
        'stream end',
      );
    }
  });
}
