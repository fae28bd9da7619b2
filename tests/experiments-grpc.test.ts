import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompleteResponseMessage, GenerateResponseMessage } from '../server/grpc/generate-response.ts';
import { DROPSERVE_SERVICE, loadDropserveProtos } from '../server/grpc/load-protos.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { e2eServerOptions, onFreePort, TEST_MODEL_NAME } from './support/test-server.ts';

/** A/B experiments through gRPC: Generate and Complete route an experiment name like HTTP does. */
const FULL = TEST_MODEL_NAME;
const PRUNED = `${TEST_MODEL_NAME}:attn-1`;

type Method = protoLoader.MethodDefinition<object, object>;

describe('A/B experiments over gRPC', () => {
  let server: RunningServer;
  let client: grpc.Client;
  let methods: Record<'Complete' | 'Generate' | 'ListModels', Method>;
  beforeAll(async () => {
    server = await onFreePort((grpcPort) =>
      startServer(
        e2eServerOptions('synthetic', {
          grpcPort,
          variants: [{ name: 'attn-1', spec: 'attn:1' }],
          experiments: [
            {
              name: 'ab',
              arms: [
                { variant: FULL, weight: 1 },
                { variant: PRUNED, weight: 1 },
              ],
            },
          ],
        }),
      ),
    );
    client = new grpc.Client(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const service = loadDropserveProtos()[DROPSERVE_SERVICE] as Record<string, Method>;
    methods = { Complete: service.Complete!, Generate: service.Generate!, ListModels: service.ListModels! };
  });

  it('ListModels lists the experiment with its arms next to the variants', async () => {
    const m = methods.ListModels;
    const reply = await new Promise<{
      models: { id: string }[];
      experiments: { name: string; arms: object[] }[];
    }>((resolve, reject) =>
      client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        (bytes: Buffer) => m.responseDeserialize(bytes) as never,
        {},
        (error, response) => (error ? reject(error) : resolve(response!)),
      ),
    );
    expect(reply.models.map((v) => v.id)).toEqual([FULL, PRUNED]);
    expect(reply.experiments).toEqual([
      {
        name: 'ab',
        arms: [
          { variant: FULL, weight: 1 },
          { variant: PRUNED, weight: 1 },
        ],
      },
    ]);
  });
  afterAll(async () => {
    client.close();
    await server.close(0);
  });

  const metadataFor = (user?: string): grpc.Metadata => {
    const metadata = new grpc.Metadata();
    if (user) metadata.set('x-dropserve-user', user);
    return metadata;
  };

  /** Complete on `model`: the response's model and the x-dropserve-variant initial metadata. */
  function complete(
    model: string,
    user?: string,
  ): Promise<{ model: string; header: string; tokens: number }> {
    const m = methods.Complete;
    return new Promise((resolve, reject) => {
      let header = '';
      const call = client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        (bytes: Buffer) => m.responseDeserialize(bytes) as CompleteResponseMessage,
        { model, prompt: 'Once', max_tokens: 2, temperature: 0 },
        metadataFor(user),
        (error, response) =>
          error
            ? reject(error)
            : resolve({ model: response!.model, header, tokens: response!.usage?.completion_tokens ?? 0 }),
      );
      call.on('metadata', (md: grpc.Metadata) => {
        header = String(md.get('x-dropserve-variant')[0] ?? '');
      });
    });
  }

  it('Complete: split between both arms, the variant in initial metadata and the response model', async () => {
    const seen: string[] = [];
    for (let i = 0; i < 60; i++) {
      const answer = await complete('ab');
      expect(answer.header).toBe(answer.model);
      expect(answer.tokens).toBeGreaterThan(0);
      seen.push(answer.model);
    }
    const pruned = seen.filter((v) => v === PRUNED).length;
    // Binomial(60, 0.5): sd ≈ 3.9; [10, 50] is beyond 5 sigma.
    expect(pruned).toBeGreaterThan(10);
    expect(pruned).toBeLessThan(50);
    expect(new Set(seen)).toEqual(new Set([FULL, PRUNED]));
  });

  it('x-dropserve-user is sticky, the same assignment as the HTTP `user` field gets', async () => {
    for (let u = 0; u < 12; u++) {
      const user = `grpc-user-${u}`;
      const first = (await complete('ab', user)).model;
      for (let k = 0; k < 3; k++) expect((await complete('ab', user)).model).toBe(first);
      expect(server.experiments.assign('ab', user)).toBe(first);
    }
  });

  it('Generate: the stream opens with the variant in metadata and every message names it', async () => {
    const m = methods.Generate;
    const stream = client.makeServerStreamRequest(
      m.path,
      m.requestSerialize,
      (bytes: Buffer) => m.responseDeserialize(bytes) as GenerateResponseMessage,
      { model: 'ab', prompt: 'Once', max_tokens: 8, ignore_eos: true },
      metadataFor('stream-user'),
    );
    let header = '';
    stream.on('metadata', (md: grpc.Metadata) => {
      header = String(md.get('x-dropserve-variant')[0] ?? '');
    });
    const models = new Set<string>();
    for await (const message of stream as AsyncIterable<GenerateResponseMessage>) models.add(message.model);
    expect([...models]).toEqual([header]);
    expect(header).toBe(server.experiments.assign('ab', 'stream-user'));
  });

  it('an unknown model lists the experiments among the available names (NOT_FOUND)', async () => {
    const error = (await complete('nope').catch((e) => e)) as grpc.ServiceError;
    expect(error.code).toBe(grpc.status.NOT_FOUND);
    expect(error.details).toMatch(/available: .*ab/);
  });
});
