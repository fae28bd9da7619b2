import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/test-server.ts';

describe('/v1/models says what is served', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({
      variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
    });
  });
  afterAll(() => server.close());

  it('marks synthetic weights and lists each variant with its drops and KV bytes/token', async () => {
    const body = (await (await fetch(`${server.url}/v1/models`)).json()) as {
      data: {
        id: string;
        parent: string | null;
        dropserve_source: { kind: string; description: string };
        dropserve_variant: { drop_attention: number[]; kv_bytes_per_token: number };
      }[];
    };
    const [full, pruned] = body.data;
    expect(full!.dropserve_source.kind).toBe('synthetic');
    expect(full!.dropserve_source.description).toMatch(/not a trained model/);
    expect(pruned!.id).toBe(`${server.modelName}:attn-1`);
    expect(pruned!.parent).toBe(server.modelName);
    expect(pruned!.dropserve_variant.drop_attention).toEqual([1]);
    // 3 of 4 attention layers keep KV.
    expect(pruned!.dropserve_variant.kv_bytes_per_token * 4).toBe(
      full!.dropserve_variant.kv_bytes_per_token * 3,
    );
  });
});
