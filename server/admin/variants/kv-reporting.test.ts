import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateEvent } from '../../../engine/client.ts';
import { BYTE_OFFSET } from '../../../engine/tokenizer/byte-tokenizer.ts';
import { DROPSERVE_SERVICE, loadDropserveProtos } from '../../grpc/load-protos.ts';
import { modelInfoMessage } from '../../grpc/model-handlers.ts';
import { FakeEngine } from '../../testing/fake-engine.ts';
import { createTestApp } from '../../testing/test-app.ts';
import type { VariantView } from './route.ts';

/**
 * KV memory as every surface reports it: GET /v1/variants (live bytes used and allocated, block
 * size, placement, admission, preemptions), GET /v1/models (the configuration), gRPC ModelInfo.
 */
const engineWithRunningSequence = async (): Promise<{ engine: FakeEngine; stop: () => Promise<void> }> => {
  const engine = new FakeEngine({
    variants: [{ name: 'a1', spec: { dropAttention: [1], dropMlp: [] } }],
    kvBlockTokens: 8,
    kvAdmission: 'worst-case',
    kvCacheBytes: 1 << 20,
  });
  const running: AsyncIterator<GenerateEvent> = engine
    .generate({
      requestId: 'r',
      variant: 'fake-model:a1',
      promptTokenIds: Array(10).fill(BYTE_OFFSET + 0x61),
      maxTokens: 4,
      sampling: DEFAULT_SAMPLING,
    })
    [Symbol.asyncIterator]();
  await running.next(); // 11 tokens held: 2 blocks of 8
  engine.countPreemption('fake-model:a1');
  return { engine, stop: async () => void (await running.return?.()) };
};

describe('KV reporting', () => {
  it('GET /v1/variants: bytes used and allocated, block size, placement, admission, preemptions', async () => {
    const { engine, stop } = await engineWithRunningSequence();
    const { app } = createTestApp(engine);
    const views = (await (await app.request('/v1/variants')).json()) as VariantView[];
    const [full, pruned] = views;
    expect(pruned).toMatchObject({
      id: 'fake-model:a1',
      kv_cache_bytes_used: 16 * pruned!.kv_bytes_per_token,
      kv_cache_bytes_allocated: 16 * pruned!.kv_bytes_per_token,
      kv_cache_budget_bytes: 1 << 20,
      kv_block_tokens: 8,
      kv_cache_placement: 'host',
      kv_admission: 'worst-case',
      num_preemptions: 1,
      requests_running: 1,
    });
    expect(pruned!.kv_cache_usage_perc).toBeCloseTo(pruned!.kv_cache_bytes_used / (1 << 20), 12);
    expect(full).toMatchObject({ kv_cache_bytes_used: 0, kv_cache_bytes_allocated: 0, num_preemptions: 0 });
    for (const key of ['kv_cache_bytes_allocated', 'num_preemptions', 'kv_block_tokens'] as const) {
      expect(Number.isInteger(full![key])).toBe(true);
    }
    await stop();
  });

  it('GET /v1/models: each variant card says how its KV is kept', async () => {
    const { engine, stop } = await engineWithRunningSequence();
    const { app } = createTestApp(engine);
    const { data } = (await (await app.request('/v1/models')).json()) as {
      data: { id: string; dropserve_variant: Record<string, unknown> }[];
    };
    for (const card of data) {
      expect(card.dropserve_variant).toMatchObject({
        kv_block_tokens: 8,
        kv_cache_placement: 'host',
        kv_admission: 'worst-case',
      });
    }
    await stop();
  });

  it('gRPC ModelInfo carries the same fields through the wire format', async () => {
    const { engine, stop } = await engineWithRunningSequence();
    const listModels = loadDropserveProtos()[DROPSERVE_SERVICE] as unknown as Record<
      string,
      { responseSerialize(value: unknown): Buffer; responseDeserialize(bytes: Buffer): unknown }
    >;
    const { responseSerialize, responseDeserialize } = listModels.ListModels!;
    const models = engine.variants().map((v) => modelInfoMessage(v, engine));
    const decoded = responseDeserialize(responseSerialize({ models, experiments: [] })) as {
      models: Record<string, unknown>[];
    };
    expect(decoded.models[1]).toMatchObject({
      id: 'fake-model:a1',
      kv_cache_bytes_used: models[1]!.kv_cache_bytes_used,
      kv_cache_bytes_allocated: models[1]!.kv_cache_bytes_allocated,
      num_preemptions: 1,
      kv_block_tokens: 8,
      kv_cache_placement: 'host',
      kv_admission: 'worst-case',
    });
    expect(models[1]!.kv_cache_bytes_allocated).toBeGreaterThan(0);
    await stop();
  });
});
