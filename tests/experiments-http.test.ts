import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ForwardInput } from '../engine/graph/io.ts';
import { type RunningServer, type StartServerOptions, startServer } from '../server/start-server.ts';
import {
  type CancelCountingEngine,
  createGatedEngine,
  type GatedRunner,
  lastPosition,
} from './support/gated-runner.ts';
import { e2eServerOptions, scrapeMetrics, sumOf, TEST_MODEL_NAME, testModel } from './support/test-server.ts';

/**
 * A/B experiments end to end: the real engine (worker thread) behind the real HTTP server, driven
 * by the official openai client. The experiment "ab" splits the full synthetic model and its
 * attention-1-dropped variant; every response says which one served it.
 */
const FULL = TEST_MODEL_NAME;
const PRUNED = `${TEST_MODEL_NAME}:attn-1`;
const VARIANT_HEADER = 'x-dropserve-variant';

function startExperimentServer(extra: Partial<StartServerOptions> = {}): Promise<RunningServer> {
  return startServer(
    e2eServerOptions('synthetic', {
      variants: [{ name: 'attn-1', spec: 'attn:1' }],
      shutdownGraceMs: 2_000,
      experiments: [
        {
          name: 'ab',
          arms: [
            { variant: FULL, weight: 1 },
            { variant: PRUNED, weight: 1 },
          ],
        },
      ],
      ...extra,
    }),
  );
}

const clientOf = (server: RunningServer, apiKey = 'unused'): OpenAI =>
  new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

/** Runs `count` jobs with at most `concurrency` at once. */
async function pool<T>(count: number, concurrency: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      results[i] = await job(i);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

/** One short completion on `model`; the variant from the header, checked against the body's model. */
async function servedBy(client: OpenAI, model: string, user?: string): Promise<string> {
  const { data, response } = await client.completions
    .create({ model, prompt: 'Once upon', max_tokens: 2, temperature: 0, user })
    .withResponse();
  const header = response.headers.get(VARIANT_HEADER);
  expect(header).toBe(data.model);
  return header!;
}

describe('A/B experiments over HTTP', () => {
  let server: RunningServer;
  let client: OpenAI;
  beforeAll(async () => {
    server = await startExperimentServer();
    client = clientOf(server);
  });
  afterAll(() => server.close(0));

  it('splits 50/50 over 400 requests within statistical tolerance, counted from x-dropserve-variant', async () => {
    const variants = await pool(400, 16, () => servedBy(client, 'ab'));
    const pruned = variants.filter((v) => v === PRUNED).length;
    expect(variants.filter((v) => v === FULL).length).toBe(400 - pruned);
    // Binomial(400, 0.5): sd 10; ±40 is a 4-sigma band.
    expect(Math.abs(pruned - 200)).toBeLessThan(40);
    const samples = await scrapeMetrics(server.httpUrl);
    expect(
      sumOf(samples, 'dropserve:experiment_assignments_total', { experiment: 'ab', variant: PRUNED }),
    ).toBeGreaterThanOrEqual(pruned);
  });

  it('keeps a user on one variant (chat and completions alike), and spreads users over both', async () => {
    const first = new Map<string, string>();
    for (let u = 0; u < 30; u++) first.set(`user-${u}`, await servedBy(client, 'ab', `user-${u}`));
    expect(new Set(first.values())).toEqual(new Set([FULL, PRUNED]));
    for (const [user, variant] of first) {
      expect(await servedBy(client, 'ab', user)).toBe(variant);
      const { data, response } = await client.chat.completions
        .create({ model: 'ab', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2, user })
        .withResponse();
      expect([user, response.headers.get(VARIANT_HEADER), data.model]).toEqual([user, variant, variant]);
    }
  });

  it('lists experiments in /v1/models (parent null, arms) and /v1/experiments', async () => {
    await fetch(`${server.httpUrl}/v1/experiments/ab`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ weights: { [FULL]: 3, [PRUNED]: 1 } }),
    });
    const models = await client.models.list();
    const card = models.data.find((m) => m.id === 'ab') as unknown as Record<string, unknown>;
    expect(card).toMatchObject({
      object: 'model',
      parent: null,
      dropserve_experiment: {
        arms: [
          { variant: FULL, weight: 3 },
          { variant: PRUNED, weight: 1 },
        ],
      },
    });
    expect(models.data.map((m) => m.id)).toEqual([FULL, PRUNED, 'ab']);
    expect((await client.models.retrieve('ab')).id).toBe('ab');
    const list = await (await fetch(`${server.httpUrl}/v1/experiments`)).json();
    expect(list).toEqual({
      object: 'list',
      data: [
        {
          object: 'experiment',
          name: 'ab',
          arms: [
            { variant: FULL, weight: 3, share: 0.75 },
            { variant: PRUNED, weight: 1, share: 0.25 },
          ],
          control: FULL,
          scope: 'replica',
        },
      ],
    });
  });

  it('creates, reads and deletes an experiment at runtime; a deleted name is a 404 model', async () => {
    const url = `${server.httpUrl}/v1/experiments/canary`;
    const created = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ arms: [{ variant: PRUNED, weight: 1 }] }),
    });
    expect(created.status).toBe(201);
    expect(await servedBy(client, 'canary')).toBe(PRUNED);
    expect(((await (await fetch(url)).json()) as { arms: unknown }).arms).toEqual([
      { variant: PRUNED, weight: 1, share: 1 },
    ]);
    const deleted = await fetch(url, { method: 'DELETE' });
    expect(await deleted.json()).toEqual({ object: 'experiment.deleted', name: 'canary', deleted: true });
    const gone = await client.completions
      .create({ model: 'canary', prompt: 'x', max_tokens: 1 })
      .catch((e) => e);
    expect(gone).toBeInstanceOf(OpenAI.NotFoundError);
    expect((gone as InstanceType<typeof OpenAI.NotFoundError>).message).toMatch(/Available models: .*ab/);
    expect((await fetch(url, { method: 'DELETE' })).status).toBe(404);
    expect((await fetch(url)).status).toBe(404);
  });

  it('rejects bad admin input with OpenAI-shaped 400s, and leaves the experiment as it was', async () => {
    const before = await (await fetch(`${server.httpUrl}/v1/experiments/ab`)).json();
    const cases: [string, unknown, RegExp][] = [
      ['not json', '{', /not valid JSON/],
      ['no arms', { arms: [] }, /arms: needs at least one arm/],
      ['negative weight', { weights: { [FULL]: -1 } }, /must be ≥ 0/],
      ['unknown variant', { weights: { 'tiny:nope': 1 } }, /variant "tiny:nope" is not served/],
      ['all zero', { weights: { [FULL]: 0, [PRUNED]: 0 } }, /weights sum to 0/],
      ['both forms', { arms: [{ variant: FULL, weight: 1 }], weights: {} }, /either "arms" or "weights"/],
      ['unknown key', { arms: [{ variant: FULL, weight: 1 }], split: 1 }, /Unrecognized key/i],
      ['string weight', { arms: [{ variant: FULL, weight: '1' }] }, /must be a number/],
    ];
    for (const [what, body, message] of cases) {
      const response = await fetch(`${server.httpUrl}/v1/experiments/ab`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
      const json = (await response.json()) as { error: { message: string; type: string; code: string } };
      expect([what, response.status, json.error.type]).toEqual([what, 400, 'invalid_request_error']);
      expect(json.error.message, what).toMatch(message);
    }
    const taken = await fetch(`${server.httpUrl}/v1/experiments/${encodeURIComponent(PRUNED)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ weights: { [FULL]: 1 } }),
    });
    expect(taken.status).toBe(400);
    expect(await (await fetch(`${server.httpUrl}/v1/experiments/ab`)).json()).toEqual(before);
  });
});

describe('experiments with --api-key', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startExperimentServer({ apiKey: 'k3y' });
  });
  afterAll(() => server.close(0));

  it('the admin API needs the key; with it, a change is served', async () => {
    const post = (headers: Record<string, string>): Promise<Response> =>
      fetch(`${server.httpUrl}/v1/experiments/ab`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ weights: { [PRUNED]: 1 } }),
      });
    expect((await post({})).status).toBe(401);
    expect((await fetch(`${server.httpUrl}/v1/experiments`)).status).toBe(401);
    expect((await fetch(`${server.httpUrl}/v1/experiments/ab`, { method: 'DELETE' })).status).toBe(401);
    expect((await post({ authorization: 'Bearer k3y' })).status).toBe(200);
    expect(await servedBy(clientOf(server, 'k3y'), 'ab')).toBe(PRUNED);
  });
});

describe('experiments at start-up', () => {
  it('refuses an --experiment naming a variant that is not served, leaving nothing running', async () => {
    const failed = await startExperimentServer({
      experiments: [{ name: 'bad', arms: [{ variant: 'tiny:missing', weight: 1 }] }],
    }).catch((e: Error) => e);
    expect(failed).toBeInstanceOf(Error);
    expect((failed as Error).message).toMatch(/variant "tiny:missing" is not served/);
  });
});

describe('A/B experiments over HTTP: changing weights while streams run', () => {
  const HOLD_AT = 50;
  let server: RunningServer;
  let client: OpenAI;
  let gate: GatedRunner;
  let isHeld: (input: ForwardInput) => boolean = () => false;
  beforeAll(async () => {
    server = await startExperimentServer({
      createEngine: async () => {
        let engine: CancelCountingEngine;
        ({ engine, gate } = await createGatedEngine(
          {
            model: testModel(),
            servedModelName: TEST_MODEL_NAME,
            variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }],
            kvCacheBytes: 64 * 1024 * 1024,
          },
          (input) => isHeld(input),
        ));
        return engine;
      },
    });
    client = clientOf(server);
  });
  afterAll(async () => {
    isHeld = () => false;
    gate?.recheck();
    await server?.close(0);
  });

  it('a weight change applies to new requests, and streams in flight finish on their variant', async () => {
    const MAX_TOKENS = 200;
    // Decode runs past HOLD_AT wait until the change is made: the 8 streams are provably in flight.
    let isHolding = true;
    isHeld = (input) => isHolding && lastPosition(input) >= HOLD_AT;
    const streams = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const { data, response } = await client.completions
          .create({
            model: 'ab',
            prompt: 'Once',
            max_tokens: MAX_TOKENS,
            ignore_eos: true,
            stream: true,
            stream_options: { include_usage: true },
          } as OpenAI.CompletionCreateParamsStreaming)
          .withResponse();
        const iterator = data[Symbol.asyncIterator]();
        const first = await iterator.next();
        return { iterator, first, variant: response.headers.get(VARIANT_HEADER)! };
      }),
    );
    // Every stream has started; now send everything to the pruned variant.
    const changed = await fetch(`${server.httpUrl}/v1/experiments/ab`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        arms: [
          { variant: FULL, weight: 0 },
          { variant: PRUNED, weight: 1 },
        ],
      }),
    });
    expect(changed.status).toBe(200);
    const running = (await (await fetch(`${server.httpUrl}/v1/variants`)).json()) as {
      requests_running: number;
    }[];
    expect(running.reduce((s, v) => s + v.requests_running, 0)).toBe(8);
    isHolding = false;
    gate.recheck();

    const after = await pool(40, 8, () => servedBy(client, 'ab'));
    expect(new Set(after)).toEqual(new Set([PRUNED]));

    for (const stream of streams) {
      let finishReason: string | null = null;
      let completionTokens = 0;
      const models = new Set<string>();
      for (let step = stream.first; !step.done; step = await stream.iterator.next()) {
        const chunk = step.value;
        models.add(chunk.model);
        finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
        completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
      }
      expect({ finishReason, completionTokens, models: [...models] }).toEqual({
        finishReason: 'length',
        completionTokens: MAX_TOKENS,
        models: [stream.variant],
      });
    }
  });
});
