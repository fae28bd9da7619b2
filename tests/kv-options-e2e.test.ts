import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { e2eServerOptions, scrapeMetrics, TEST_MODEL_NAME } from './support/test-server.ts';

/**
 * `--kv-block-tokens`, `--kv-admission`, `--kv-watermark` and `--kv-placement` reach the engine in
 * its worker thread, and the KV it keeps is reported the same way on /v1/variants, /v1/models and
 * /metrics.
 */
describe('KV options through the worker engine', () => {
  const budgetBytes = 4 * 1024 * 1024;
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(
      e2eServerOptions('synthetic', {
        variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
        kvCacheBytes: budgetBytes,
        kvBlockTokens: 8,
        kvAdmission: 'worst-case',
        kvWatermark: 0.05,
        // The device pool on the CPU EP: tensors in JS memory, nothing crosses to a device.
        kvPlacement: 'device',
      }),
    );
    const response = await fetch(`${server.httpUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: `${TEST_MODEL_NAME}:attn-1`,
        prompt: 'abc',
        max_tokens: 5,
        temperature: 0,
      }),
    });
    expect(response.status).toBe(200);
  });
  afterAll(() => server.close(0));

  it('GET /v1/variants shows the block size, the admission policy and device placement', async () => {
    const views = (await (await fetch(`${server.httpUrl}/v1/variants`)).json()) as Record<string, unknown>[];
    expect(views).toHaveLength(2);
    for (const v of views) {
      expect(v).toMatchObject({
        kv_block_tokens: 8,
        kv_admission: 'worst-case',
        kv_cache_placement: 'device',
        kv_cache_budget_bytes: budgetBytes,
        num_preemptions: 0,
        // Nothing runs: no live blocks.
        kv_cache_bytes_used: 0,
        kv_cache_usage_perc: 0,
      });
      const allocated = v.kv_cache_bytes_allocated as number;
      expect(Number.isInteger(allocated) && allocated >= 0 && allocated <= budgetBytes).toBe(true);
    }
  });

  it('GET /v1/models shows the same configuration on every variant card', async () => {
    const { data } = (await (await fetch(`${server.httpUrl}/v1/models`)).json()) as {
      data: { dropserve_variant: Record<string, unknown> }[];
    };
    for (const card of data) {
      expect(card.dropserve_variant).toMatchObject({
        kv_block_tokens: 8,
        kv_admission: 'worst-case',
        kv_cache_placement: 'device',
      });
    }
  });

  it('/metrics exports preemptions as a counter and allocated bytes as a gauge, per variant', async () => {
    const samples = await scrapeMetrics(server.httpUrl);
    for (const variant of [TEST_MODEL_NAME, `${TEST_MODEL_NAME}:attn-1`]) {
      expect(samples.get(`dropserve:num_preemptions_total{variant="${variant}"}`)).toBe(0);
      const allocated = samples.get(`dropserve:kv_cache_allocated_bytes{variant="${variant}"}`);
      expect(allocated).toBeGreaterThanOrEqual(0);
      expect(allocated).toBeLessThanOrEqual(budgetBytes);
      expect(samples.get(`dropserve:kv_cache_usage_perc{variant="${variant}"}`)).toBe(0);
      expect(
        samples.get(`dropserve:device_transfer_bytes_total{variant="${variant}",direction="host_to_device"}`),
      ).toBe(0);
      expect(
        samples.get(`dropserve:device_transfer_bytes_total{variant="${variant}",direction="device_to_host"}`),
      ).toBe(0);
    }
    // The one request (5 tokens: the first from the prefill) decoded 4 steps on the pruned variant.
    expect(samples.get(`dropserve:decode_steps_total{variant="${TEST_MODEL_NAME}:attn-1"}`)).toBe(4);
    expect(samples.get(`dropserve:decode_steps_total{variant="${TEST_MODEL_NAME}"}`)).toBe(0);
  });
});
