import { Hono } from 'hono';
import type { ServerMetrics } from '../../metrics/metrics.ts';
import type { AppEnv } from '../env.ts';

/** GET /metrics: Prometheus text format. Never behind the API key: scrapers don't send one. */
export function metricsRoute({ metrics }: { metrics: ServerMetrics }): Hono<AppEnv> {
  return new Hono<AppEnv>().get('/metrics', async (c) => {
    const { contentType, body } = await metrics.render();
    return c.body(body, 200, { 'Content-Type': contentType });
  });
}
