import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateEvent } from '../../engine/client.ts';
import type { TextFinish } from '../../engine/output/text-generation.ts';
import { BYTE_OFFSET } from '../../engine/tokenizer/byte-tokenizer.ts';
import { FakeEngine } from '../testing/fake-engine.ts';
import { buckets125, ServerMetrics } from './metrics.ts';

/** vLLM's definitions, checked on one finish with known timestamps. */
const finish: TextFinish = {
  type: 'finish',
  reason: 'length',
  usage: { promptTokens: 7, completionTokens: 4 },
  variant: 'fake-model',
  timings: {
    arrivalMs: 1_000,
    scheduledMs: 1_050,
    prefillEndMs: 1_200,
    firstTokenMs: 1_200,
    lastTokenMs: 1_500,
    finishedMs: 1_510,
  },
  tokenTimesMs: [1_200, 1_300, 1_400, 1_500],
};

async function sample(metrics: ServerMetrics, series: string): Promise<number | undefined> {
  const line = (await metrics.registry.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('ServerMetrics', () => {
  it('observes TTFT from transport arrival, every inter-token gap, TPOT and the phase times', async () => {
    const metrics = new ServerMetrics(new FakeEngine(), { collectProcessMetrics: false });
    metrics.observeRequest({
      variant: 'fake-model',
      transport: 'http',
      finish,
      receivedMs: 990,
      maxTokens: 4,
    });
    const l = '{variant="fake-model",transport="http"}';
    expect(await sample(metrics, `dropserve:time_to_first_token_seconds_sum${l}`)).toBeCloseTo(0.21);
    expect(await sample(metrics, `dropserve:inter_token_latency_seconds_count${l}`)).toBe(3);
    expect(await sample(metrics, `dropserve:inter_token_latency_seconds_sum${l}`)).toBeCloseTo(0.3);
    expect(await sample(metrics, `dropserve:request_time_per_output_token_seconds_sum${l}`)).toBeCloseTo(0.1);
    expect(await sample(metrics, `dropserve:e2e_request_latency_seconds_sum${l}`)).toBeCloseTo(0.52);
    expect(await sample(metrics, `dropserve:request_queue_time_seconds_sum${l}`)).toBeCloseTo(0.05);
    expect(await sample(metrics, `dropserve:request_prefill_time_seconds_sum${l}`)).toBeCloseTo(0.15);
    expect(await sample(metrics, `dropserve:request_decode_time_seconds_sum${l}`)).toBeCloseTo(0.3);
    expect(await sample(metrics, `dropserve:request_inference_time_seconds_sum${l}`)).toBeCloseTo(0.45);
    expect(await sample(metrics, `dropserve:prompt_tokens_total${l}`)).toBe(7);
    expect(await sample(metrics, `dropserve:generation_tokens_total${l}`)).toBe(4);
    expect(
      await sample(
        metrics,
        'dropserve:request_success_total{variant="fake-model",transport="http",finished_reason="length"}',
      ),
    ).toBe(1);
  });

  it("uses vLLM's bucket sets", async () => {
    const metrics = new ServerMetrics(new FakeEngine(), { collectProcessMetrics: false });
    metrics.observeRequest({ variant: 'fake-model', transport: 'grpc', finish });
    const text = await metrics.registry.metrics();
    const les = (name: string): string[] =>
      [...text.matchAll(new RegExp(`${name}_bucket\\{le="([^"]+)"`, 'g'))].map((m) => m[1]!);
    expect(les('dropserve:time_to_first_token_seconds').slice(0, 3)).toEqual(['0.001', '0.005', '0.01']);
    expect(les('dropserve:time_to_first_token_seconds')).toContain('2560');
    expect(les('dropserve:inter_token_latency_seconds').at(-2)).toBe('80');
    expect(les('dropserve:e2e_request_latency_seconds').at(-2)).toBe('7680');
    expect(buckets125(1000)).toEqual([1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]);
  });

  it('bounds the variant label to served variants and reads gauges from the engine at scrape time', async () => {
    const engine = new FakeEngine({ variants: [{ name: 'a1', spec: { dropAttention: [1], dropMlp: [] } }] });
    const metrics = new ServerMetrics(engine, { collectProcessMetrics: false });
    metrics.observeRequest({ variant: 'made-up', transport: 'http', finish });
    const text = await metrics.registry.metrics();
    expect(text).not.toContain('made-up');
    expect(text).toContain('dropserve:prompt_tokens_total{variant="unknown",transport="http"} 7');
    expect(text).toContain('dropserve:kv_cache_bytes_per_token{variant="fake-model:a1"} 768');
    expect(text).toContain('dropserve:num_requests_running{variant="fake-model"} 0');
  });

  it("exports KV bytes used and allocated in whole blocks, and the engine's preemption count as a counter", async () => {
    const engine = new FakeEngine({ kvBlockTokens: 16, kvCacheBytes: 1 << 20 });
    const metrics = new ServerMetrics(engine, { collectProcessMetrics: false });
    const bytesPerToken = engine.variants()[0]!.kvBytesPerToken;
    const start = (promptTokens: number): AsyncIterator<GenerateEvent> =>
      engine
        .generate({
          requestId: `p${promptTokens}`,
          variant: 'fake-model',
          promptTokenIds: Array(promptTokens).fill(BYTE_OFFSET + 0x61),
          maxTokens: 8,
          sampling: DEFAULT_SAMPLING,
        })
        [Symbol.asyncIterator]();
    const long = start(20);
    const short = start(3);
    // Each paused after its first token: 21 and 4 tokens held, i.e. 2 + 1 blocks in use, and a
    // batch-major arena of 2 rows × 2 blocks allocated.
    await long.next();
    await short.next();
    const l = '{variant="fake-model"}';
    expect(await sample(metrics, `dropserve:kv_cache_used_bytes${l}`)).toBe(48 * bytesPerToken);
    expect(await sample(metrics, `dropserve:kv_cache_allocated_bytes${l}`)).toBe(64 * bytesPerToken);
    expect(await sample(metrics, `dropserve:kv_cache_usage_perc${l}`)).toBeCloseTo(
      (48 * bytesPerToken) / (1 << 20),
      12,
    );
    expect(await sample(metrics, `dropserve:num_preemptions_total${l}`)).toBe(0);
    engine.countPreemption('fake-model');
    engine.countPreemption('fake-model');
    expect(await sample(metrics, `dropserve:num_preemptions_total${l}`)).toBe(2);
    expect(await metrics.registry.metrics()).toContain('# TYPE dropserve:num_preemptions_total counter');
    await long.return?.();
    await short.return?.();
    expect(await sample(metrics, `dropserve:kv_cache_allocated_bytes${l}`)).toBe(0);
    expect(await sample(metrics, `dropserve:num_preemptions_total${l}`)).toBe(2);
  });

  it('exports nothing engine-related before the engine exists', async () => {
    const metrics = new ServerMetrics(() => undefined, { collectProcessMetrics: false });
    expect(await metrics.registry.metrics()).not.toMatch(/num_requests_running\{/);
  });
});
