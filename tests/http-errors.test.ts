import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BodyFuzzer, type FuzzBody } from './support/fuzz.ts';
import { startTestServer, TEST_MODEL_NAME, type TestServer } from './support/test-server.ts';

/**
 * Every error the HTTP API promises, end to end on the real engine: status, OpenAI's error shape
 * ({"error": {message, type, param, code}}), x-request-id; and 500 hostile bodies that must never
 * produce a 5xx or stop the server.
 */
let t: TestServer;
const MAX_BODY = 64 * 1024;

beforeAll(async () => {
  t = await startTestServer({ maxBodyBytes: MAX_BODY });
});
afterAll(async () => {
  await t?.close();
});

interface ErrorReply {
  status: number;
  headers: Headers;
  error: { message: string; type: string; param: string | null; code: string };
}

async function post(
  path: string,
  body: FuzzBody | object,
  headers: Record<string, string> = {},
): Promise<Response> {
  const payload = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  return fetch(`${t.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: payload,
  });
}

async function errorOf(response: Response): Promise<ErrorReply> {
  const json = (await response.json()) as { error: ErrorReply['error'] };
  expect(Object.keys(json)).toEqual(['error']);
  expect(Object.keys(json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  return { status: response.status, headers: response.headers, error: json.error };
}

const completion = (extra: object): object => ({
  model: TEST_MODEL_NAME,
  prompt: 'hi',
  max_tokens: 2,
  ...extra,
});

describe('400 invalid_request_error', () => {
  it.each([
    [{ temperature: 'hot' }, 'temperature'],
    [{ top_p: 2 }, 'top_p'],
    [{ n: 0 }, 'n'],
    [{ logprobs: 21 }, 'logprobs'],
    [{ max_tokens: 1.5 }, 'max_tokens'],
    [{ stop: [1, 2] }, 'stop'],
    [{ seed: 1e300 }, 'seed'],
    [{ prompt: [] }, 'prompt'],
    [{ prompt: [[1, 99999]] }, 'prompt'],
    [{ stream_options: { include_usage: true } }, 'stream_options'],
  ])('names the bad parameter: %j', async (extra, param) => {
    const reply = await errorOf(await post('/v1/completions', completion(extra)));
    expect(reply.status).toBe(400);
    expect(reply.error.type).toBe('invalid_request_error');
    expect(reply.error.param).toBe(param);
    expect(reply.error.message).toContain(param === 'prompt' && 'prompt' in extra ? '' : param);
  });

  it('rejects malformed JSON and non-object bodies', async () => {
    for (const body of ['{"model":', '[1,2]', '', 'null']) {
      const reply = await errorOf(await post('/v1/completions', body));
      expect(reply.status).toBe(400);
      expect(reply.error.type).toBe('invalid_request_error');
    }
  });

  it('rejects unsupported OpenAI parameters by name, and unknown ones too', async () => {
    const tools = await errorOf(
      await post('/v1/chat/completions', {
        model: TEST_MODEL_NAME,
        messages: [{ role: 'user', content: 'hi' }],
        tools: [{ type: 'function', function: { name: 'f' } }],
        response_format: { type: 'json_object' },
      }),
    );
    expect(tools.status).toBe(400);
    expect(tools.error.code).toBe('unsupported_parameter');
    expect(tools.error.message).toContain('tools');
    expect(tools.error.message).toContain('response_format');
    const bestOf = await errorOf(await post('/v1/completions', completion({ best_of: 3 })));
    expect(bestOf.error.param).toBe('best_of');
    // Neutral values ask for nothing and are accepted.
    const neutral = await post('/v1/completions', completion({ best_of: 1, logit_bias: {}, suffix: null }));
    expect(neutral.status).toBe(200);
    const unknown = await errorOf(await post('/v1/completions', completion({ frobnicate: 1, wibble: 2 })));
    expect(unknown.status).toBe(400);
    expect(unknown.error.code).toBe('unknown_parameter');
    expect(unknown.error.message).toContain('frobnicate, wibble');
  });

  it("overflowing the context gives vLLM's message with the numbers", async () => {
    const prompt = 'a'.repeat(249); // 250 tokens with BOS, context 256
    const over = await errorOf(await post('/v1/completions', completion({ prompt, max_tokens: 50 })));
    expect(over.status).toBe(400);
    expect(over.error.code).toBe('context_length_exceeded');
    expect(over.error.message).toContain(
      "This model's maximum context length is 256 tokens. However, you requested 300 tokens (250 in the prompt, 50 in the completion).",
    );
    const full = await errorOf(await post('/v1/completions', completion({ prompt: 'a'.repeat(300) })));
    expect(full.error.message).toContain('you requested 301 tokens in the prompt');
    const chat = await errorOf(
      await post('/v1/chat/completions', {
        model: TEST_MODEL_NAME,
        messages: [{ role: 'user', content: 'b'.repeat(200) }],
        max_tokens: 50,
      }),
    );
    expect(chat.error.message).toContain('(218 in the messages, 50 in the completion)');
  });

  it('surfaces as BadRequestError in the openai client', async () => {
    await expect(
      t.client.completions.create({ model: TEST_MODEL_NAME, prompt: 'x', temperature: -1 }),
    ).rejects.toBeInstanceOf(OpenAI.BadRequestError);
  });
});

describe('404, 413 and request ids', () => {
  it('404 for an unknown model lists the available ones', async () => {
    const reply = await errorOf(await post('/v1/completions', completion({ model: 'nope' })));
    expect(reply.status).toBe(404);
    expect(reply.error.code).toBe('model_not_found');
    expect(reply.error.message).toContain(`Available models: ${TEST_MODEL_NAME}`);
    await expect(
      t.client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    ).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('404 in the same shape for unknown routes', async () => {
    const reply = await errorOf(await fetch(`${t.url}/v1/embeddings`, { method: 'POST' }));
    expect(reply.status).toBe(404);
  });

  it('413 for a body over --max-body-bytes, with or without Content-Length', async () => {
    const big = JSON.stringify(completion({ prompt: 'x'.repeat(MAX_BODY) }));
    const declared = await errorOf(await post('/v1/completions', big));
    expect(declared.status).toBe(413);
    expect(declared.error.code).toBe('request_too_large');
    const bytes = new TextEncoder().encode(big);
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 8192) controller.enqueue(bytes.slice(i, i + 8192));
        controller.close();
      },
    });
    const streamed = await fetch(`${t.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chunked,
      duplex: 'half',
    } as RequestInit);
    expect((await errorOf(streamed)).status).toBe(413);
  });

  it('every response carries x-request-id; a caller-given one is echoed', async () => {
    const ok = await fetch(`${t.url}/health`);
    expect(ok.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const bad = await post('/v1/completions', '{', { 'x-request-id': 'trace-42' });
    expect(bad.status).toBe(400);
    expect(bad.headers.get('x-request-id')).toBe('trace-42');
    const good = await post('/v1/completions', completion({}), { 'x-request-id': 'trace-43' });
    expect(good.headers.get('x-request-id')).toBe('trace-43');
    expect(((await good.json()) as { id: string }).id).toBe('cmpl-trace-43');
  });
});

describe('fuzzed bodies', () => {
  it('500 hostile bodies: no 5xx, every error in OpenAI shape, and the server keeps serving', async () => {
    const fuzzer = new BodyFuzzer(20240607, TEST_MODEL_NAME);
    const bodies = Array.from({ length: 500 }, (_, i) => ({
      path: i % 2 === 0 ? '/v1/completions' : '/v1/chat/completions',
      body: fuzzer.body(i % 2 === 1),
    }));
    const statuses = new Map<number, number>();
    const failures: string[] = [];
    const CONCURRENCY = 16;
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < bodies.length) {
          const { path, body } = bodies[next++]!;
          const response = await post(path, body);
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          const text = await response.text();
          if (response.status >= 500) failures.push(`${response.status} ${text.slice(0, 200)}`);
          if (response.status >= 400) {
            const parsed = JSON.parse(text) as { error?: { message?: unknown; type?: unknown } };
            if (typeof parsed.error?.message !== 'string' || typeof parsed.error.type !== 'string') {
              failures.push(`bad error shape: ${text.slice(0, 200)}`);
            }
          }
        }
      }),
    );
    expect(failures).toEqual([]);
    // Both outcomes happened: the fuzzer is neither all-valid nor all-garbage.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(10);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(200);
    const after = await t.client.completions.create({
      model: TEST_MODEL_NAME,
      prompt: 'still here',
      max_tokens: 3,
    });
    expect(after.choices[0]!.finish_reason).toMatch(/length|stop/);
    expect((await fetch(`${t.url}/health`)).status).toBe(200);
  });
});
