import OpenAI from 'openai';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VariantView } from '../server/admin/variants/route.ts';
import type { CompleteResponseMessage } from '../server/grpc/generate-response.ts';
import { DROPSERVE_SERVICE } from '../server/grpc/load-protos.ts';
import type { ListModelsResponseMessage } from '../server/grpc/model-handlers.ts';
import { GrpcTestClient } from '../server/grpc/testing/grpc-test-client.ts';
import type { ModelCard } from '../server/openai/models/serving.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { hasChromium, launchChromium } from './support/headless-chromium.ts';
import { e2eServerOptions, eventually, onFreePort, scrapeMetrics, sumOf } from './support/test-server.ts';

/**
 * Served live: `dropserve serve --variant attn-2=attn:2,4 --variant auto=adaptive:attn:2` with an
 * experiment splitting traffic between the two and every pruned request shadow-scored. Both arms
 * get fidelity in /v1/variants and on the dashboard; the adaptive one reports its chosen drops in
 * every response (HTTP usage, gRPC Usage) and its distinct masks in /v1/variants, /v1/models,
 * gRPC ListModels, /metrics and the dashboard. The engine runs in its worker thread, as served.
 */
const FULL = 'stories260K';
const STATIC = `${FULL}:attn-2`;
const ADAPTIVE = `${FULL}:auto`;
const SCORED_PER_ARM = 3;
const withChromium = hasChromium('tests/adaptive-served.test.ts');
const OPENINGS = [
  'Tom had a big red ball.',
  'The cat sat on the mat and looked at the bird.',
  'Once upon a time, there was a little girl named Lily.',
  'One day, a boy named Tim went to the park with his mom.',
  'Sue and Ben were friends. They liked to',
  'The sun was hot.',
];

describe('an experiment between a static and an adaptive variant, served live', () => {
  let server: RunningServer;
  let client: OpenAI;
  beforeAll(async () => {
    server = await onFreePort((grpcPort) =>
      startServer(
        e2eServerOptions('stories260K', {
          grpcPort,
          variants: [
            { name: 'attn-2', spec: 'attn:2,4' },
            { name: 'auto', spec: 'adaptive:attn:2' },
          ],
          experiments: [
            {
              name: 'split',
              arms: [
                { variant: STATIC, weight: 1 },
                { variant: ADAPTIVE, weight: 1 },
              ],
            },
          ],
          shadowRate: 1,
        }),
      ),
    );
    client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
  }, 120_000);
  afterAll(() => server?.close(0));

  const variants = async (): Promise<VariantView[]> =>
    (await (await fetch(`${server.httpUrl}/v1/variants`)).json()) as VariantView[];

  /** Scored or dropped shadow samples of a variant: every finished request ends as one of them. */
  const accounted = async (variant: string): Promise<number> => {
    const metrics = await scrapeMetrics(server.httpUrl);
    return (
      sumOf(metrics, 'dropserve:fidelity_top1_agreement_count', { variant }) +
      sumOf(metrics, 'dropserve:shadow_dropped_total', { variant })
    );
  };

  it('both arms get traffic and live fidelity; the adaptive arm reports its drops and masks', async () => {
    const served = new Map<string, number>([
      [STATIC, 0],
      [ADAPTIVE, 0],
    ]);
    let views = await variants();
    const samples = (id: string): number => views.find((v) => v.id === id)?.fidelity?.samples ?? 0;
    // One request at a time, each waited on until its shadow score is in: a sequence of states.
    for (let i = 0; i < 80 && (samples(STATIC) < SCORED_PER_ARM || samples(ADAPTIVE) < SCORED_PER_ARM); i++) {
      const completion = await client.completions.create({
        model: 'split',
        prompt: OPENINGS[i % OPENINGS.length]!,
        max_tokens: 16,
        user: `user-${i}`,
      });
      const variant = completion.model;
      served.set(variant, served.get(variant)! + 1);
      const drops = (completion.usage as unknown as { dropserve?: { adaptive_drops: unknown } }).dropserve;
      if (variant === ADAPTIVE) {
        expect(drops?.adaptive_drops).toEqual({ attention: expect.any(Array), mlp: [] });
      } else {
        expect(drops).toBeUndefined();
      }
      await eventually(async () => (await accounted(variant)) >= served.get(variant)!);
      views = await variants();
    }
    expect(samples(STATIC)).toBeGreaterThanOrEqual(SCORED_PER_ARM);
    expect(samples(ADAPTIVE)).toBeGreaterThanOrEqual(SCORED_PER_ARM);

    const full = views.find((v) => v.id === FULL)!;
    const staticView = views.find((v) => v.id === STATIC)!;
    const adaptiveView = views.find((v) => v.id === ADAPTIVE)!;
    expect(staticView.adaptive).toBeUndefined();
    expect(adaptiveView.drop_attention).toEqual([]);
    expect(adaptiveView.adaptive).toEqual({ attention: 2, mlp: 0, distinct_masks: expect.any(Number) });
    const masks = adaptiveView.adaptive!.distinct_masks;
    expect(masks).toBeGreaterThanOrEqual(1);
    // Sequences keep 3 of 5 layers' KV, whichever 3 they are.
    expect(adaptiveView.kv_bytes_per_token).toBe((full.kv_bytes_per_token * 3) / 5);
    expect(adaptiveView.kv_bytes_per_token).toBe(staticView.kv_bytes_per_token);
    for (const v of [staticView, adaptiveView]) {
      expect(v.fidelity!.agreement).toBeGreaterThan(0);
      expect(v.fidelity!.agreement).toBeLessThan(1);
      expect(v.fidelity!.kl_mean).toBeGreaterThan(0);
    }
    // The bounded label: one series per adaptive variant (its name), the count as the value.
    const metrics = await scrapeMetrics(server.httpUrl);
    expect(sumOf(metrics, 'dropserve:adaptive_distinct_masks', { variant: ADAPTIVE })).toBe(masks);
    expect([...metrics.keys()].filter((s) => s.startsWith('dropserve:adaptive_distinct_masks{'))).toEqual([
      `dropserve:adaptive_distinct_masks{variant="${ADAPTIVE}"}`,
    ]);
    const card = (await client.models.list()).data.find((m) => m.id === ADAPTIVE) as unknown as ModelCard;
    expect(card.dropserve_variant?.adaptive).toEqual(adaptiveView.adaptive);
  }, 300_000);

  it('chat (plain and streamed) and gRPC Complete carry the drops the prompt chose', async () => {
    const chat = await client.chat.completions.create({
      model: ADAPTIVE,
      messages: [{ role: 'user', content: 'Tell me about a dog.' }],
      max_tokens: 8,
      temperature: 0,
    });
    const dropsOf = (usage: unknown): { attention: number[]; mlp: number[] } =>
      (usage as { dropserve: { adaptive_drops: { attention: number[]; mlp: number[] } } }).dropserve
        .adaptive_drops;
    const chatDrops = dropsOf(chat.usage);
    expect(chatDrops.attention).toHaveLength(2);
    expect(chatDrops.mlp).toEqual([]);
    const stream = await client.chat.completions.create({
      model: ADAPTIVE,
      messages: [{ role: 'user', content: 'Tell me about a dog.' }],
      max_tokens: 8,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamedUsage: unknown;
    for await (const chunk of stream) if (chunk.usage) streamedUsage = chunk.usage;
    // The same prompt chooses the same drops.
    expect(dropsOf(streamedUsage)).toEqual(chatDrops);

    // Several prompts in one completions request: each prompt's own choice, in prompt order.
    const [tom, cat] = [OPENINGS[0]!, OPENINGS[1]!];
    const one = async (prompt: string) =>
      dropsOf((await client.completions.create({ model: ADAPTIVE, prompt, max_tokens: 2 })).usage);
    const [tomDrops, catDrops] = [await one(tom), await one(cat)];
    expect(tomDrops).not.toEqual(catDrops);
    const both = await client.completions.create({
      model: ADAPTIVE,
      prompt: [cat, tom],
      max_tokens: 2,
      n: 2,
    });
    expect((both.usage as unknown as { dropserve: unknown }).dropserve).toEqual({
      adaptive_drops: catDrops,
      adaptive_drops_by_prompt: [catDrops, tomDrops],
    });

    // Prompt logprobs need a fixed network to score the prompt with: a clear 400, not a crash.
    const echo = await fetch(`${server.httpUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: ADAPTIVE,
        prompt: 'Tom had a ball.',
        max_tokens: 2,
        echo: true,
        logprobs: 1,
      }),
    });
    expect(echo.status).toBe(400);
    const error = ((await echo.json()) as { error: { message: string; type: string } }).error;
    expect(error.type).toBe('invalid_request_error');
    expect(error.message).toMatch(/input-adaptive/);

    const grpc = new GrpcTestClient(server.grpcPort!);
    try {
      const prompt = OPENINGS[0]!;
      const http = await client.completions.create({
        model: ADAPTIVE,
        prompt,
        max_tokens: 8,
        temperature: 0,
      });
      const reply = await grpc.unary<CompleteResponseMessage>(DROPSERVE_SERVICE, 'Complete', {
        model: ADAPTIVE,
        prompt,
        max_tokens: 8,
        temperature: 0,
      });
      expect(reply.usage?.adaptive_drops).toEqual(dropsOf(http.usage));
      const plain = await grpc.unary<CompleteResponseMessage>(DROPSERVE_SERVICE, 'Complete', {
        model: STATIC,
        prompt,
        max_tokens: 4,
      });
      expect(plain.usage?.adaptive_drops ?? null).toBeNull();
      const listed = await grpc.unary<ListModelsResponseMessage>(DROPSERVE_SERVICE, 'ListModels', {});
      const info = listed.models.find((m) => m.id === ADAPTIVE)!;
      const view = (await variants()).find((v) => v.id === ADAPTIVE)!;
      expect(info.adaptive).toEqual(view.adaptive);
      expect(listed.models.find((m) => m.id === STATIC)!.adaptive ?? null).toBeNull();
    } finally {
      grpc.close();
    }
  }, 120_000);

  it.skipIf(!withChromium)(
    'dashboard: both arms show fidelity; the adaptive row shows its drops per prompt and its distinct masks',
    async () => {
      const browser: Browser = await launchChromium();
      const page = await browser.newPage({ viewport: { width: 1480, height: 1100 } });
      try {
        const pageErrors: string[] = [];
        page.on('pageerror', (e) => pageErrors.push(String(e)));
        await page.goto(`${server.httpUrl}/dashboard?poll_ms=300`);
        await page.waitForFunction(
          () =>
            (
              (globalThis as unknown as { __dashboard: { last: VariantView[] | null } }).__dashboard.last ??
              []
            ).length === 3,
          undefined,
          { timeout: 30_000, polling: 100 },
        );
        // Read the poll and the cells it drew in one turn of the page.
        const rows = await page.evaluate(() => {
          interface Element {
            textContent: string | null;
            querySelector(selector: string): Element | null;
          }
          const win = globalThis as unknown as { __dashboard: { last: VariantView[] }; document: Element };
          return win.__dashboard.last.map((v) => {
            const row = win.document.querySelector(`#variants tr[data-variant="${v.id}"]`);
            const card = win.document.querySelector(`.verdict[data-variant="${v.id}"]`);
            return {
              view: v,
              drops: row?.querySelector('td.drops')?.textContent ?? '',
              verdict: card?.querySelector('.line')?.textContent ?? '',
              sub: card?.querySelector('.sub')?.textContent ?? '',
            };
          });
        });
        const adaptive = rows.find((r) => r.view.id === ADAPTIVE)!;
        const masks = adaptive.view.adaptive!.distinct_masks;
        expect(adaptive.drops).toBe(
          `adaptive: attn 2 · mlp 0 per prompt${masks} distinct ${masks === 1 ? 'mask' : 'masks'}`,
        );
        const staticRow = rows.find((r) => r.view.id === STATIC)!;
        expect(staticRow.drops).toBe('attn 2,4 · mlp —');
        for (const r of [staticRow, adaptive]) {
          const f = r.view.fidelity!;
          expect(f.samples).toBeGreaterThanOrEqual(SCORED_PER_ARM);
          expect(r.verdict).toContain(`${(100 * f.agreement).toFixed(0)}% agreement`);
          expect(r.sub).toContain(`${f.samples} requests scored`);
        }
        expect(pageErrors).toEqual([]);
      } finally {
        await page.close();
        await browser.close();
      }
    },
    120_000,
  );
});
