import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import OpenAI from 'openai';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VariantView } from '../server/admin/variants/route.ts';
import { type RunningServer, type StartServerOptions, startServer } from '../server/start-server.ts';
import { hasChromium, launchChromium, screenshot } from './support/headless-chromium.ts';
import {
  e2eServerOptions,
  eventually,
  STORIES_260K,
  TEST_MODEL_NAME,
  testModel,
} from './support/test-server.ts';

/**
 * The dashboard in a real headless Chromium against a real server with pruned variants and shadow
 * scoring on, under live traffic: the charts fill, the table shows each variant's KV bytes per token
 * and its ratio to the full model, the verdicts read agreement; a screenshot goes to docs/dashboard.png.
 */
// The README's picture is refreshed on request (UPDATE_SCREENSHOT=1 npx vitest run tests/dashboard.test.ts).
const withChromium = hasChromium('tests/dashboard.test.ts');

interface DashboardState {
  points: number;
  chartPoints: () => number;
  hasCharts: boolean;
  lastError: string | null;
}

function serverOptions(extra: Partial<StartServerOptions>): StartServerOptions {
  return e2eServerOptions(existsSync(STORIES_260K) ? 'stories260K' : 'synthetic', {
    variants: [
      { name: 'attn-1', spec: 'attn:3' },
      { name: 'attn-2', spec: 'attn:2,3' },
    ],
    shadowRate: 1,
    ...extra,
  });
}

/** Requests round-robin over every served model until stopped, a few at a time. */
function startTraffic(
  server: RunningServer,
  apiKey = 'unused',
): { stop: () => Promise<void>; sent: () => number } {
  const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey, maxRetries: 0 });
  const models = server.engine.variants().map((v) => v.id);
  const prompts = ['Once upon a time', 'Lily and Tom went to the park.', 'The cat saw a big dog', 'One day'];
  let isStopped = false;
  let sent = 0;
  const user = async (u: number): Promise<void> => {
    for (let i = u; !isStopped; i += 3) {
      sent++;
      await client.completions.create({
        model: models[i % models.length]!,
        prompt: prompts[i % prompts.length]!,
        max_tokens: 32,
        temperature: 0,
      });
    }
  };
  const users = Promise.all([0, 1, 2].map(user));
  return {
    stop: async () => {
      isStopped = true;
      await users;
    },
    sent: () => sent,
  };
}

const dashboardState = (page: Page): Promise<DashboardState> =>
  page.evaluate(() => {
    const d = (globalThis as unknown as { __dashboard: DashboardState }).__dashboard;
    return { points: d.points, chartPoints: d.chartPoints(), hasCharts: d.hasCharts, lastError: d.lastError };
  }) as unknown as Promise<DashboardState>;

/** The dashboard's byte format, for the expected table text. */
const bytesText = (n: number): string => {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
};

describe.skipIf(!withChromium)('dashboard in headless Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  }, 60_000);
  afterAll(() => browser?.close());

  it('charts fill under traffic, rows show KV bytes/token and verdicts; screenshot saved', async () => {
    const server = await startServer(serverOptions({}));
    const traffic = startTraffic(server);
    const page = await browser.newPage({ viewport: { width: 1480, height: 1100 } });
    try {
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      const response = await page.goto(`${server.httpUrl}/dashboard?poll_ms=500`);
      expect(response?.status()).toBe(200);
      // Enough polls for lines, and fidelity scored for both pruned variants.
      await page.waitForFunction(
        () => {
          const d = (globalThis as unknown as { __dashboard: { points: number; last: VariantView[] | null } })
            .__dashboard;
          return d.points >= 12 && (d.last ?? []).filter((v) => (v.fidelity?.samples ?? 0) >= 2).length === 2;
        },
        undefined,
        { timeout: 40_000, polling: 250 },
      );
      const state = await dashboardState(page);
      expect(state.hasCharts).toBe(true);
      expect(state.lastError).toBeNull();
      expect(state.chartPoints).toBeGreaterThan(50);
      // uPlot draws on canvases: one per chart.
      expect(await page.locator('#charts canvas').count()).toBeGreaterThanOrEqual(6);

      const views = (await (await fetch(`${server.httpUrl}/v1/variants`)).json()) as VariantView[];
      const full = views.find((v) => v.id === v.base)!;
      for (const v of views) {
        const cell = page.locator(`#variants tr[data-variant="${v.id}"] td.kv-bytes`);
        const text = await cell.textContent();
        expect(text).toContain(bytesText(v.kv_bytes_per_token));
        if (v !== full)
          expect(text).toContain(`${(v.kv_bytes_per_token / full.kv_bytes_per_token).toFixed(2)}×`);
      }
      // KV used / allocated and preemptions, as the poll the table was drawn from said (read in one
      // turn of the page, so no poll lands between the data and the cells).
      const rows = await page.evaluate(() => {
        interface Element {
          textContent: string | null;
          querySelector(selector: string): Element | null;
        }
        const win = globalThis as unknown as { __dashboard: { last: VariantView[] }; document: Element };
        return win.__dashboard.last.map((v) => {
          const row = win.document.querySelector(`#variants tr[data-variant="${v.id}"]`);
          return {
            used: v.kv_cache_bytes_used,
            allocated: v.kv_cache_bytes_allocated,
            preemptions: v.num_preemptions,
            usageText: row?.querySelector('td.kv-usage')?.textContent ?? '',
            preemptionsText: row?.querySelector('td.preemptions')?.textContent ?? '',
          };
        });
      });
      expect(rows).toHaveLength(3);
      for (const r of rows) {
        expect(r.usageText).toContain(`${bytesText(r.used)} / ${bytesText(r.allocated)}`);
        expect(r.preemptionsText).toBe(String(r.preemptions));
      }
      const verdicts = await page.locator('.verdict .line').allTextContents();
      expect(verdicts).toHaveLength(2);
      for (const line of verdicts)
        expect(line).toMatch(/^attn-\d: 0\.\d\d× KV, (\d+\.\d\d|—)× tokens\/s, \d+% agreement$/);
      expect(pageErrors).toEqual([]);

      await traffic.stop();
      // One more poll after traffic stops, so the numbers in the picture are settled.
      const { points } = await dashboardState(page);
      await page.waitForFunction(
        (n) => (globalThis as unknown as { __dashboard: { points: number } }).__dashboard.points > n + 1,
        points,
      );
      expect(existsSync(await screenshot(page, 'dashboard'))).toBe(true);
    } finally {
      await traffic.stop();
      await page.close();
      await server.close(0);
    }
  }, 90_000);

  it('with --api-key: asks for the key, and polls once given ?key= (which leaves the address bar)', async () => {
    const server = await startServer(
      serverOptions({
        loadedModel: testModel(),
        servedModelName: TEST_MODEL_NAME,
        model: undefined,
        apiKey: 's3cret',
      }),
    );
    const page = await browser.newPage();
    try {
      // The page itself is public.
      expect((await page.goto(`${server.httpUrl}/dashboard`))?.status()).toBe(200);
      await page.waitForFunction(
        () =>
          (globalThis as unknown as { __dashboard: DashboardState }).__dashboard.lastError === 'unauthorized',
      );
      expect(await page.locator('#status').textContent()).toMatch(/needs an API key/);

      await page.goto(`${server.httpUrl}/dashboard?key=s3cret&poll_ms=300`);
      await page.waitForFunction(
        () => (globalThis as unknown as { __dashboard: DashboardState }).__dashboard.points >= 2,
      );
      expect(new URL(page.url()).search).toBe('?poll_ms=300');
      expect(await page.locator('#variants tbody tr').count()).toBe(3);
    } finally {
      await page.close();
      await server.close(0);
    }
  }, 60_000);

  it('serves its assets, and the vendored chart library from node_modules', async () => {
    const server = await startServer(
      serverOptions({
        loadedModel: testModel(),
        servedModelName: TEST_MODEL_NAME,
        model: undefined,
        shadowRate: 0,
      }),
    );
    try {
      for (const [path, type] of [
        ['/dashboard', 'text/html'],
        ['/dashboard/dashboard.js', 'text/javascript'],
        ['/dashboard/dashboard.css', 'text/css'],
        ['/dashboard/vendor/uPlot.iife.min.js', 'text/javascript'],
      ]) {
        const r = await fetch(server.httpUrl + path!);
        expect([path, r.status, r.headers.get('content-type')?.split(';')[0]]).toEqual([path, 200, type]);
      }
      expect((await fetch(`${server.httpUrl}/dashboard/../package.json`)).status).toBe(404);
      expect((await fetch(`${server.httpUrl}/dashboard/nope.js`)).status).toBe(404);
    } finally {
      await server.close(0);
    }
  });
});

describe('Grafana dashboard (docs/grafana-dashboard.json)', () => {
  interface GrafanaTarget {
    expr: string;
    datasource: { uid: string };
  }
  interface GrafanaPanel {
    type: string;
    title: string;
    targets?: GrafanaTarget[];
  }
  const dashboard = JSON.parse(
    readFileSync(resolve(process.cwd(), 'docs/grafana-dashboard.json'), 'utf8'),
  ) as {
    panels: GrafanaPanel[];
    templating: { list: { name: string; type: string; multi?: boolean; includeAll?: boolean }[] };
  };
  const targets = dashboard.panels.flatMap((p) => p.targets ?? []);

  it('parses, has the $variant and $datasource variables, and every query filters on $variant or spans all', () => {
    const variables = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
    expect(variables.variant).toMatchObject({ type: 'query', multi: true, includeAll: true });
    expect(variables.datasource).toMatchObject({ type: 'datasource' });
    expect(targets.length).toBeGreaterThan(15);
    for (const t of targets) {
      expect(t.datasource.uid).toBe(`\${datasource}`); // Grafana's variable, not a JS template
      // The only unfiltered series: rejections (no variant label) and the full model's KV bytes/token.
      if (!/request_rejected_total|scalar\(max/.test(t.expr)) expect(t.expr).toContain('variant=~"$variant"');
    }
  });

  it("every metric it queries is in the server's /metrics after traffic", async () => {
    const server = await startServer(
      serverOptions({
        loadedModel: testModel(),
        servedModelName: TEST_MODEL_NAME,
        model: undefined,
        experiments: [{ name: 'ab', arms: [{ variant: `${TEST_MODEL_NAME}:attn-1`, weight: 1 }] }],
      }),
    );
    try {
      const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
      for (const model of [...server.engine.variants().map((v) => v.id), 'ab']) {
        await client.completions.create({
          model,
          prompt: 'Once',
          max_tokens: 8,
          ignore_eos: true,
        } as OpenAI.CompletionCreateParamsNonStreaming);
      }
      await client.completions.create({ model: 'nope', prompt: 'x' }).catch(() => undefined);
      // A sampled stream the client leaves early: counted as a dropped shadow sample.
      const stream = await client.completions.create({
        model: `${TEST_MODEL_NAME}:attn-2`,
        prompt: 'Once',
        max_tokens: 240,
        ignore_eos: true,
        stream: true,
      } as OpenAI.CompletionCreateParamsStreaming);
      for await (const _ of stream) break;
      let exposed = new Set<string>();
      const referenced = new Set(targets.flatMap((t) => t.expr.match(/dropserve:[A-Za-z0-9_]+/g) ?? []));
      await eventually(async () => {
        const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
        exposed = new Set(
          text
            .split('\n')
            .filter((line) => line !== '' && !line.startsWith('#'))
            .map((line) => line.split(/[{ ]/)[0]!),
        );
        return [...referenced].every((name) => exposed.has(name));
      }, 10_000).catch(() => undefined);
      expect([...referenced].filter((name) => !exposed.has(name))).toEqual([]);
      expect(referenced.size).toBeGreaterThan(15);
    } finally {
      await server.close(0);
    }
  }, 60_000);
});
