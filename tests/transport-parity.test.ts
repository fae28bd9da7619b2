import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateResponseMessage } from '../server/grpc/generate-response.ts';
import { collectStream, GrpcTestClient } from '../server/grpc/testing/grpc-test-client.ts';
import { onFreePort, startTestServer, type TestServer } from './support/test-server.ts';

/**
 * One server, both transports, one engine: a greedy request must give the same tokens, text and
 * usage whether it comes over HTTP (OpenAI completions) or gRPC (streaming Generate).
 */
describe('HTTP and gRPC give the same greedy output (stories260K)', () => {
  let server: TestServer;
  let grpc: GrpcTestClient;
  beforeAll(async () => {
    server = await onFreePort((grpcPort) =>
      startTestServer({
        model: 'stories260K',
        variants: [{ name: 'attn-2', spec: { dropAttention: [1, 3], dropMlp: [] } }],
        grpcPort,
      }),
    );
    grpc = new GrpcTestClient(server.server.grpcPort!);
  });
  afterAll(() => server.close());

  for (const [model, prompt] of [
    ['stories260K', 'Once upon a time'],
    ['stories260K:attn-2', 'Lily and Tom went to the park.'],
    ['stories260K', 'The little dog was sad because'],
  ] as const) {
    it(`${model}: "${prompt}"`, async () => {
      const http = await server.client.completions.create({
        model,
        prompt,
        max_tokens: 48,
        temperature: 0,
        logprobs: 0,
      });
      const { messages, error } = await collectStream(
        grpc.serverStream<GenerateResponseMessage>('dropserve.v1.Dropserve', 'Generate', {
          model,
          prompt,
          max_tokens: 48,
          temperature: 0,
        }),
      );
      expect(error).toBeUndefined();
      const grpcTokens = messages.flatMap((m) => m.token_ids);
      const grpcText = messages.map((m) => m.text).join('');
      const last = messages.at(-1)!;
      const httpTokens = (http.choices[0]!.logprobs!.tokens ?? []).length;
      expect(grpcText).toBe(http.choices[0]!.text);
      expect(grpcTokens.length).toBe(httpTokens);
      expect(grpcTokens.length).toBe(http.usage!.completion_tokens);
      expect(last.usage!.prompt_tokens).toBe(http.usage!.prompt_tokens);
      expect(last.usage!.completion_tokens).toBe(http.usage!.completion_tokens);
      expect(last.finish_reason).toBe(http.choices[0]!.finish_reason);
      expect(last.model).toBe(http.model);
      // Token for token: each gRPC id's piece is the HTTP logprobs' token string at that position.
      expect(grpcTokens.map((id) => server.server.engine.tokenizer.tokenText(id))).toEqual(
        http.choices[0]!.logprobs!.tokens,
      );
    });
  }
});
