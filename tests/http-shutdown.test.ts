import { spawn } from 'node:child_process';
import { type Agent, request as httpRequest, type IncomingMessage, Agent as KeepAliveAgent } from 'node:http';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import type { EngineClient } from '../engine/client.ts';
import { createWorkerEngine } from '../engine/worker/worker-engine.ts';
import { startServer } from '../server/start-server.ts';
import { closedAfterEach } from './support/close-after-each.ts';
import { GatedEngine } from './support/gated-engine.ts';
import { startTestServer, TEST_MODEL_NAME, testModel } from './support/test-server.ts';

/**
 * Shutdown: the drain as clients see it (503 with `Connection: close` on kept-alive connections,
 * /health 503 while the listener stays open, in-flight work finishing), start-up cancelled by a
 * shutdown, and the real `dropserve serve` process exiting 0 on SIGTERM at any moment.
 */
const servers = closedAfterEach();

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
  reusedSocket: boolean;
}

/** One request through node:http (so the test controls connection reuse through the agent). */
function send(url: string, agent: Agent, method = 'GET', body?: string): Promise<Reply> {
  return new Promise((resolvePromise, reject) => {
    const req = httpRequest(
      url,
      { method, agent, headers: { 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolvePromise({
            status: res.statusCode!,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
            reusedSocket: req.reusedSocket,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const completionBody = (maxTokens: number, stream = false): string =>
  JSON.stringify({
    model: TEST_MODEL_NAME,
    prompt: 'drain',
    max_tokens: maxTokens,
    ignore_eos: true,
    stream,
  });

/**
 * A test server with one admitted completion of `maxTokens` held in front of the engine until the
 * test opens the gate, and a keep-alive agent with a single socket (so requests reuse one connection).
 */
async function serverHoldingOneRequest(maxTokens: number) {
  const gated = new GatedEngine(
    await createWorkerEngine({ model: testModel(), servedModelName: TEST_MODEL_NAME }),
  );
  const t = await startTestServer({ createEngine: async () => gated });
  servers.push(t);
  const agent = new KeepAliveAgent({ keepAlive: true, maxSockets: 1 });
  const inFlight = fetch(`${t.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: completionBody(maxTokens),
  });
  await gated.held(1);
  return { gated, t, agent, inFlight };
}

describe('drain (in-process server)', () => {
  it('answers kept-alive connections with 503 + Connection: close while an admitted request finishes', async () => {
    const { gated, t, agent, inFlight } = await serverHoldingOneRequest(12);
    try {
      // A connection kept alive from before the drain (used again at once, well inside Node's
      // keep-alive timeout).
      const before = await send(`${t.url}/health`, agent);
      expect(before.status).toBe(200);
      const closed = t.server.close(600_000);

      const health = await send(`${t.url}/health`, agent);
      expect(health.reusedSocket).toBe(true);
      expect(health.status).toBe(503);
      expect(health.headers.connection).toBe('close');
      expect(JSON.parse(health.body).error.code).toBe('shutting_down');

      // The previous answer closed that connection; this one comes on a fresh connection.
      const models = await send(`${t.url}/v1/models`, agent);
      // A new connection is still accepted during the drain, and answered.
      expect(models.reusedSocket).toBe(false);
      expect(models.status).toBe(503);
      expect(models.headers.connection).toBe('close');
      expect(models.headers['retry-after']).toBe('1');
      const error = JSON.parse(models.body).error;
      expect(error).toMatchObject({ type: 'service_unavailable_error', code: 'shutting_down' });
      // Scrapers still get the final numbers.
      const metrics = await send(`${t.url}/metrics`, agent);
      expect(metrics.status).toBe(200);
      expect(metrics.body).toContain('dropserve:request_success_total');
      expect(metrics.headers.connection).toBe('close');

      gated.open();
      const response = await inFlight;
      expect(response.status).toBe(200);
      // Answered during the drain: its connection is not offered for reuse either.
      expect(response.headers.get('connection')).toBe('close');
      const completion = (await response.json()) as {
        choices: { finish_reason: string }[];
        usage: { completion_tokens: number };
      };
      expect(completion.choices[0]!.finish_reason).toBe('length');
      expect(completion.usage.completion_tokens).toBe(12);
      await closed;
      await expect(fetch(`${t.url}/health`)).rejects.toThrow();
    } finally {
      agent.destroy();
    }
  });

  it('a kept-alive connection asking during the drain gets a 503 on that same connection', async () => {
    const { gated, t, agent, inFlight } = await serverHoldingOneRequest(4);
    try {
      expect((await send(`${t.url}/v1/models`, agent)).status).toBe(200);
      const closed = t.server.close(600_000);
      const late = await send(`${t.url}/v1/completions`, agent, 'POST', completionBody(4));
      expect(late.reusedSocket).toBe(true);
      expect(late.status).toBe(503);
      expect(late.headers.connection).toBe('close');
      expect(JSON.parse(late.body).error.code).toBe('shutting_down');
      gated.open();
      expect((await inFlight).status).toBe(200);
      await closed;
    } finally {
      agent.destroy();
    }
  });

  it('a shutdown asked for while the model loads cancels start-up and closes what was started', async () => {
    const gated = new GatedEngine(
      await createWorkerEngine({ model: testModel(), servedModelName: TEST_MODEL_NAME }),
    );
    let finishLoading!: () => void;
    const loaded = new Promise<void>((r) => {
      finishLoading = r;
    });
    let url!: string;
    let listening!: () => void;
    const isListening = new Promise<void>((r) => {
      listening = r;
    });
    const shutdown = new AbortController();
    const starting = startServer({
      host: '127.0.0.1',
      port: 0,
      grpcPort: 0,
      collectProcessMetrics: false,
      signal: shutdown.signal,
      createEngine: async (): Promise<EngineClient> => {
        await loaded;
        return gated;
      },
      onListening: ({ httpUrl }) => {
        url = httpUrl;
        listening();
      },
    });
    await isListening;
    expect((await fetch(`${url}/health`)).status).toBe(503);
    shutdown.abort();
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as { error: { code: string } }).error.code).toBe('shutting_down');
    finishLoading();
    await expect(starting).rejects.toMatchObject({ code: 'DS_SHUTTING_DOWN' });
    expect(gated.isReady()).toBe(false);
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });
});

/** The checkpoint that ships in the repository, named by path so it works whatever the default is. */
const SHIPPED_MODEL = resolve(process.cwd(), 'models/stories260K/stories260K.bin');

interface ServeProcess {
  /** Resolves with the URL once HTTP listens (before the model has loaded). */
  listening: Promise<string>;
  exited: Promise<number | null>;
  messages: () => string[];
  kill(signal: NodeJS.Signals): void;
}

function spawnServe(extra: string[] = []): ServeProcess {
  const child = spawn(
    process.execPath,
    [
      'bin/dropserve.js',
      'serve',
      '--model',
      SHIPPED_MODEL,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--grpc-port',
      '0',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const listening = new Promise<string>((resolveUrl, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      lines.push(entry);
      if (typeof entry.url === 'string') resolveUrl(entry.url);
    });
    void exited.then((code) => reject(new Error(`exited before listening (${code})`)));
  });
  listening.catch(() => {});
  return {
    listening,
    exited,
    messages: () => lines.map((l) => String(l.msg)),
    kill: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

/** Polls /health (state the server exposes) until it answers 200. */
async function healthy(url: string): Promise<void> {
  for (;;) {
    const status = await fetch(`${url}/health`).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('dropserve serve: signals (process)', () => {
  it('SIGTERM the instant /health says ok drains and exits 0', async () => {
    const serve = spawnServe();
    try {
      await healthy(await serve.listening);
      serve.kill('SIGTERM');
      expect(await serve.exited).toBe(0);
      expect(serve.messages()).toContain('shut down');
    } finally {
      serve.kill('SIGKILL');
    }
  });

  it('SIGTERM while loading (or whenever it lands during start-up) exits 0', async () => {
    const serve = spawnServe();
    try {
      await serve.listening;
      serve.kill('SIGTERM');
      expect(await serve.exited).toBe(0);
      expect(serve.messages().some((m) => m.startsWith('shut down'))).toBe(true);
    } finally {
      serve.kill('SIGKILL');
    }
  });

  it('a stream started before SIGTERM runs to [DONE] with all its tokens, then the process exits 0', async () => {
    const serve = spawnServe(['--shutdown-grace-ms', '600000']);
    try {
      const url = await serve.listening;
      await healthy(url);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
      const response = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          model: models.data[0]!.id,
          prompt: 'Once upon a time',
          max_tokens: 60,
          ignore_eos: true,
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      // Headers are out: the request was admitted and its first token generated.
      expect(response.status).toBe(200);
      serve.kill('SIGTERM');
      const events = (await response.text())
        .split('\n\n')
        .filter((block) => block.startsWith('data: '))
        .map((block) => block.slice('data: '.length));
      expect(events.at(-1)).toBe('[DONE]');
      expect(JSON.parse(events.at(-2)!).usage.completion_tokens).toBe(60);
      expect(events.some((e) => e.includes('"finish_reason":"length"'))).toBe(true);
      expect(await serve.exited).toBe(0);
    } finally {
      serve.kill('SIGKILL');
    }
  });
});
