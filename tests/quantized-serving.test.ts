/**
 * `serve --weights int8|int4` end to end on the trained stories260K checkpoint: the real worker
 * engine and HTTP server, the official openai client, and the weight bytes every variant reports.
 */

import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseServeArgs } from '../cli/serve.ts';
import { loadModel } from '../engine/model/load-model.ts';
import { LINEAR_WEIGHT_NAMES } from '../engine/model/weights.ts';
import { applyWeightFormat, linearShape, type WeightOptions } from '../engine/quant/quantize-weights.ts';
import { weightByteTable } from '../engine/quant/weight-bytes.ts';
import type { ListModelsResponseMessage } from '../server/grpc/model-handlers.ts';
import { startTestGrpcServer } from '../server/grpc/testing/test-server.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { e2eServerOptions, STORIES_260K } from './support/test-server.ts';

const PROMPT = 'Once upon a time, there was a little';
const MAX_TOKENS = 24;
const INT8: WeightOptions = { format: 'int8', blockSize: 32, quantizeLmHead: false };
const VARIANTS = [{ name: 'attn-2', spec: { dropAttention: [2], dropMlp: [] } }];

interface Card {
  id: string;
  dropserve_variant: { weight_bytes_per_token: number; weight_format: string; kv_bytes_per_token: number };
}

async function serve(weights: WeightOptions): Promise<{ server: RunningServer; client: OpenAI }> {
  const server = await startServer(
    e2eServerOptions('stories260K', { weights, variants: VARIANTS, shutdownGraceMs: 2_000 }),
  );
  const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
  return { server, client };
}

describe('serve --weights', () => {
  let fp32: Awaited<ReturnType<typeof serve>>;
  let int8: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    fp32 = await serve({ ...INT8, format: 'fp32' });
    int8 = await serve(INT8);
  });
  afterAll(async () => {
    await fp32?.server.close(0);
    await int8?.server.close(0);
  });

  it('/v1/models and /v1/variants report weight bytes per token per variant, as stored', async () => {
    const model = await loadModel({ model: STORIES_260K });
    const table = weightByteTable(model.config, applyWeightFormat(model.config, model.weights, INT8));
    const full = table.shared + table.attention.reduce((a, b) => a + b) + table.mlp.reduce((a, b) => a + b);
    const cards = ((await (await fetch(`${int8.server.httpUrl}/v1/models`)).json()) as { data: Card[] }).data;
    expect(cards.map((c) => c.dropserve_variant.weight_format)).toEqual(['int8', 'int8']);
    expect(cards[0]!.dropserve_variant.weight_bytes_per_token).toBe(full);
    // the dropped attention layer's weights are not read
    expect(cards[1]!.dropserve_variant.weight_bytes_per_token).toBe(full - table.attention[2]!);

    const fp32Cards = ((await (await fetch(`${fp32.server.httpUrl}/v1/models`)).json()) as { data: Card[] })
      .data;
    const fp32Bytes = fp32Cards[0]!.dropserve_variant.weight_bytes_per_token;
    expect(fp32Cards[0]!.dropserve_variant.weight_format).toBe('fp32');
    const linearValues = model.weights.layers.reduce(
      (sum, layer) => sum + LINEAR_WEIGHT_NAMES.reduce((n, name) => n + layer[name].length, 0),
      0,
    );
    const normValues = model.config.numLayers * 2 * model.config.dim;
    const shared = (model.config.dim + model.config.dim + model.config.vocabSize * model.config.dim) * 4;
    expect(fp32Bytes).toBe(shared + (normValues + linearValues) * 4);
    // int8 linears: 1 byte per value (the last block of a row padded to 32) + a float32 scale per
    // block; the fp32 head and norms stay
    const int8LinearBytes = LINEAR_WEIGHT_NAMES.reduce((sum, name) => {
      const [rows, cols] = linearShape(model.config, name);
      return sum + rows * Math.ceil(cols / 32) * (32 + 4);
    }, 0);
    expect(fp32Bytes - full).toBe(linearValues * 4 - model.config.numLayers * int8LinearBytes);

    const variants = (await (await fetch(`${int8.server.httpUrl}/v1/variants`)).json()) as {
      id: string;
      weight_bytes_per_token: number;
      weight_format: string;
    }[];
    expect(variants.map((v) => v.weight_bytes_per_token)).toEqual(
      cards.map((c) => c.dropserve_variant.weight_bytes_per_token),
    );
  });

  it('gRPC ListModels carries the same weight bytes and format', async () => {
    const grpc = await startTestGrpcServer(int8.server.engine);
    try {
      const { models } = await grpc.client.unary<ListModelsResponseMessage>(
        'dropserve.v1.Dropserve',
        'ListModels',
        {},
      );
      const cards = ((await (await fetch(`${int8.server.httpUrl}/v1/models`)).json()) as { data: Card[] })
        .data;
      expect(models.map((m) => [m.weight_bytes_per_token, m.weight_format])).toEqual(
        cards.map((c) => [c.dropserve_variant.weight_bytes_per_token, 'int8']),
      );
    } finally {
      await grpc.close();
    }
  });

  it('int8 greedy text through the openai client starts as fp32 does', async () => {
    const complete = async ({ client, server }: typeof fp32) => {
      const id = server.engine.model.name;
      const r = await client.completions.create({
        model: id,
        prompt: PROMPT,
        max_tokens: MAX_TOKENS,
        temperature: 0,
      });
      return r.choices[0]!.text;
    };
    const [reference, quantized] = [await complete(fp32), await complete(int8)];
    expect(reference.length).toBeGreaterThan(20);
    // per-block int8 weights move logits by ~1e-2; the first words agree on this trained model
    expect(quantized.slice(0, 20)).toBe(reference.slice(0, 20));
  });
});

describe('serve flag validation', () => {
  it.each([
    [['--weights', 'int3'], /--weights must be one of fp32, fp16, int8, int4, got "int3"/],
    [['--weights', 'int4', '--quant-block', '24'], /--quant-block must be a power of two/],
    [['--quant-block', '64'], /--quant-block applies to --weights int8\|int4/],
  ])('%j is refused naming the flag', (argv, message) => {
    expect(() => parseServeArgs(argv, {})).toThrow(message);
  });

  it('parses --weights int4 --quant-block 64 --quantize-lm-head', () => {
    const config = parseServeArgs(['--weights', 'int4', '--quant-block', '64', '--quantize-lm-head'], {});
    expect(config !== 'help' && config.server.weights).toEqual({
      format: 'int4',
      blockSize: 64,
      quantizeLmHead: true,
    });
  });
});
