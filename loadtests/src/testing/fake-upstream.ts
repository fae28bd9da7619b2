import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A scripted OpenAI-compatible streaming server for load-generator tests: a real HTTP server on
 * 127.0.0.1 whose timing is chosen per request, and which logs when it actually wrote each chunk
 * so tests can compare client measurements against the server's own clock (same process, same
 * performance.now()).
 */

export interface RequestContext {
  /** Arrival order, from 0. */
  index: number;
  model: string;
  path: string;
  body: Record<string, unknown>;
  /** Requests in flight for this model, this one included. */
  inFlight: number;
}

export type FakePlan =
  | { kind: 'error'; status: number; message?: string }
  | {
      kind: 'stream';
      /** Arrival → first text chunk (for serial plans: start of service → first chunk). */
      ttftMs: number;
      /** Gap between text chunks. */
      itlMs: number;
      /** Text chunks to send (one token each). */
      chunks: number;
      /** Reported usage.completion_tokens; null sends no usage chunk. Default = chunks. */
      usageCompletionTokens?: number | null;
      /** Write every event in two pieces 3 ms apart, cut inside a UTF-8 character. */
      splitEvents?: boolean;
      /** Serve one request at a time across the whole server (a saturated engine). */
      serial?: boolean;
      /** Close the stream without `data: [DONE]`. */
      omitDone?: boolean;
    };

export interface FakeRequestLog {
  index: number;
  model: string;
  path: string;
  body: Record<string, unknown>;
  authorization: string | undefined;
  arrivedAtMs: number;
  /** When each text chunk's last byte was written. */
  textWritesAtMs: number[];
}

export interface FakeUpstreamOptions {
  plan: (ctx: RequestContext) => FakePlan;
  /** Body for GET /v1/variants; absent = 404. Called on every poll. */
  variants?: (inFlightByModel: ReadonlyMap<string, number>) => unknown;
}

export interface FakeUpstream {
  baseUrl: string;
  log: FakeRequestLog[];
  variantPolls: number;
  close(): Promise<void>;
}

export async function startFakeUpstream(options: FakeUpstreamOptions): Promise<FakeUpstream> {
  const inFlightByModel = new Map<string, number>();
  let serialTail: Promise<void> = Promise.resolve();
  let nextIndex = 0;
  const state: FakeUpstream = { baseUrl: '', log: [], variantPolls: 0, close: async () => {} };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const arrivedAtMs = performance.now();
    const path = (req.url ?? '/').split('?')[0]!;
    if (req.method === 'GET' && path === '/v1/variants') {
      state.variantPolls++;
      if (!options.variants) return sendJson(res, 404, { error: { message: 'not found' } });
      return sendJson(res, 200, options.variants(inFlightByModel));
    }
    if (req.method !== 'POST' || (path !== '/v1/completions' && path !== '/v1/chat/completions')) {
      return sendJson(res, 404, { error: { message: `no route ${req.method} ${path}` } });
    }
    const body = JSON.parse(await readBody(req)) as Record<string, unknown>;
    const model = String(body.model ?? '');
    const inFlight = (inFlightByModel.get(model) ?? 0) + 1;
    inFlightByModel.set(model, inFlight);
    const entry: FakeRequestLog = {
      index: nextIndex++,
      model,
      path,
      body,
      authorization: req.headers.authorization,
      arrivedAtMs,
      textWritesAtMs: [],
    };
    state.log.push(entry);
    try {
      const plan = options.plan({ index: entry.index, model, path, body, inFlight });
      if (plan.kind === 'error') {
        return sendJson(res, plan.status, {
          error: { message: plan.message ?? `scripted ${plan.status}`, type: 'error', code: plan.status },
        });
      }
      if (plan.serial) {
        const previous = serialTail;
        let release = (): void => {};
        serialTail = new Promise<void>((resolve) => {
          release = resolve;
        });
        await previous;
        try {
          await streamPlan(res, entry, plan, performance.now());
        } finally {
          release();
        }
      } else {
        await streamPlan(res, entry, plan, arrivedAtMs);
      }
    } finally {
      inFlightByModel.set(model, (inFlightByModel.get(model) ?? 1) - 1);
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: { message: String(error) } });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  state.baseUrl = `http://127.0.0.1:${port}`;
  state.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return state;
}

async function streamPlan(
  res: ServerResponse,
  entry: FakeRequestLog,
  plan: Extract<FakePlan, { kind: 'stream' }>,
  startMs: number,
): Promise<void> {
  const isChat = entry.path === '/v1/chat/completions';
  // A client that leaves (timeout, abort) ends the script: no timer outlives its connection.
  const gone = new AbortController();
  res.once('close', () => gone.abort());
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
  const write = async (data: string): Promise<void> => {
    const event = `data: ${data}\n\n`;
    if (plan.splitEvents) {
      // Cut inside a multi-byte UTF-8 character when there is one, else in the middle.
      const bytes = Buffer.from(event, 'utf8');
      const firstMultiByte = bytes.findIndex((b) => b >= 0x80);
      const cut = firstMultiByte === -1 ? Math.floor(bytes.length / 2) : firstMultiByte + 1;
      res.write(bytes.subarray(0, cut));
      await sleep(3);
      res.write(bytes.subarray(cut));
    } else {
      res.write(event);
    }
  };
  if (isChat) {
    // vLLM-style role chunk with empty content: it must not count as the first token.
    await write(chunkJson(entry.model, true, { role: 'assistant', content: '' }, null));
  }
  for (let i = 0; i < plan.chunks; i++) {
    const waitMs = startMs + plan.ttftMs + i * plan.itlMs - performance.now();
    if (waitMs > 0) await sleep(waitMs, undefined, { signal: gone.signal }).catch(() => {});
    if (gone.signal.aborted) return;
    const isLast = i === plan.chunks - 1;
    const text = i % 2 === 0 ? ' héllo' : ' wörld'; // multi-byte characters exercise UTF-8 splits
    const payload = isChat ? { content: text } : text;
    await write(chunkJson(entry.model, isChat, payload, isLast ? 'length' : null));
    entry.textWritesAtMs.push(performance.now());
  }
  const completionTokens =
    plan.usageCompletionTokens === undefined ? plan.chunks : plan.usageCompletionTokens;
  if (completionTokens !== null) {
    await write(
      JSON.stringify({
        id: 'cmpl-fake',
        object: isChat ? 'chat.completion.chunk' : 'text_completion',
        model: entry.model,
        choices: [],
        usage: { prompt_tokens: 7, completion_tokens: completionTokens, total_tokens: 7 + completionTokens },
      }),
    );
  }
  if (!plan.omitDone) await write('[DONE]');
  res.end();
}

function chunkJson(model: string, isChat: boolean, payload: unknown, finishReason: string | null): string {
  const choice = isChat
    ? { index: 0, delta: payload, finish_reason: finishReason }
    : { index: 0, text: payload, logprobs: null, finish_reason: finishReason };
  return JSON.stringify({
    id: 'cmpl-fake',
    object: isChat ? 'chat.completion.chunk' : 'text_completion',
    created: 0,
    model,
    choices: [choice],
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts).toString('utf8');
}
