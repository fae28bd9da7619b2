import type { Hono } from 'hono';
import type { EngineClient } from '../../engine/client.ts';
import { createHttpApp } from '../http/app.ts';
import type { AppEnv } from '../http/env.ts';
import { ServerLifecycle } from '../lifecycle.ts';
import { type Logger, silentLogger } from '../logger.ts';
import { ServerMetrics } from '../metrics/metrics.ts';

/** The HTTP app over a given engine, without sockets: drive it with app.request(). */
export function createTestApp(
  engine: EngineClient | undefined,
  options: { apiKey?: string; maxBodyBytes?: number; logger?: Logger } = {},
): { app: Hono<AppEnv>; lifecycle: ServerLifecycle; metrics: ServerMetrics } {
  const lifecycle = new ServerLifecycle();
  if (engine) lifecycle.setEngine(engine);
  const metrics = new ServerMetrics(() => lifecycle.engine, { collectProcessMetrics: false });
  const app = createHttpApp({ lifecycle, metrics, ...options, logger: options.logger ?? silentLogger() });
  return { app, lifecycle, metrics };
}

/** POST a JSON body (or raw text) to the app. */
export function postJson(
  app: Hono<AppEnv>,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
) {
  return app.request(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
