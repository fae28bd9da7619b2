/**
 * k6: streaming /v1/chat/completions, timed per chunk like vllm bench serve (TTFT = first content
 * chunk, ITL = every gap between content chunks, TPOT = (E2E − TTFT)/(tokens − 1)). k6 has no SSE
 * client, so this needs a k6 built with the xk6-sse extension:
 *
 *   xk6 build --with github.com/phymbert/xk6-sse
 *   ./k6 run -e URL=http://127.0.0.1:8000 -e MODEL=stories260K loadtests/k6/chat-stream.ts
 *
 * Environment: URL, MODEL, API_KEY, VUS (4), DURATION (30s), MAX_TOKENS (64), PROMPT,
 * TTFT_P95_MS (1000), TPOT_P95_MS (100), MAX_ERROR_RATE (0.01).
 */
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import type { Options } from 'k6/options';
import sse from 'k6/x/sse';

const BASE_URL = (__ENV.URL ?? 'http://127.0.0.1:8000').replace(/\/+$/, '');
const MODEL = __ENV.MODEL ?? 'stories260K';
const API_KEY = __ENV.API_KEY ?? '';
const MAX_TOKENS = Number(__ENV.MAX_TOKENS ?? '64');
const PROMPT = __ENV.PROMPT ?? 'Tell me a story about a dragon who learns to bake.';

export const options: Options = {
  scenarios: {
    chat: { executor: 'constant-vus', vus: Number(__ENV.VUS ?? '4'), duration: __ENV.DURATION ?? '30s' },
  },
  thresholds: {
    llm_ttft: [`p(95)<${__ENV.TTFT_P95_MS ?? '1000'}`],
    llm_tpot: [`p(95)<${__ENV.TPOT_P95_MS ?? '100'}`],
    llm_failed: [`rate<${__ENV.MAX_ERROR_RATE ?? '0.01'}`],
  },
};

const ttft = new Trend('llm_ttft', true);
const itl = new Trend('llm_itl', true);
const tpot = new Trend('llm_tpot', true);
const e2e = new Trend('llm_e2e', true);
const outputTokens = new Counter('llm_output_tokens');
const failed = new Rate('llm_failed');

interface ChatChunk {
  choices?: { delta?: { content?: string }; finish_reason?: string | null }[];
  usage?: { completion_tokens?: number };
  error?: { message?: string };
}

export default function (): void {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (API_KEY) headers.authorization = `Bearer ${API_KEY}`;
  const body = JSON.stringify({
    model: MODEL,
    messages: [{ role: 'user', content: PROMPT }],
    max_tokens: MAX_TOKENS,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  });

  const sentAt = Date.now();
  const contentAt: number[] = [];
  let lastChoiceAt = 0;
  let usageTokens: number | undefined;
  let isDone = false;
  let errorText = '';

  const res = sse.open(`${BASE_URL}/v1/chat/completions`, { method: 'POST', headers, body }, (client) => {
    client.on('event', (event) => {
      if (event.data === '[DONE]') {
        isDone = true;
        client.close();
        return;
      }
      const now = Date.now();
      let chunk: ChatChunk;
      try {
        chunk = JSON.parse(event.data) as ChatChunk;
      } catch {
        errorText = `unparseable chunk: ${event.data.slice(0, 100)}`;
        client.close();
        return;
      }
      if (chunk.error) {
        errorText = chunk.error.message ?? 'error in stream';
        client.close();
        return;
      }
      if (chunk.usage?.completion_tokens !== undefined) usageTokens = chunk.usage.completion_tokens;
      const choice = chunk.choices?.[0];
      if (!choice) return;
      if (choice.delta?.content) contentAt.push(now);
      lastChoiceAt = now;
    });
    client.on('error', (e) => {
      errorText = e.error();
    });
  });

  const isOk = res.status === 200 && isDone && errorText === '' && contentAt.length > 0;
  check(res, {
    'status is 200': (r) => r.status === 200,
    'stream finished with [DONE]': () => isDone,
    'generated text': () => contentAt.length > 0,
  });
  failed.add(!isOk);
  if (!isOk) return;

  const tokens = usageTokens ?? contentAt.length;
  const first = contentAt[0]!;
  const end = lastChoiceAt || contentAt[contentAt.length - 1]!;
  ttft.add(first - sentAt);
  e2e.add(end - sentAt);
  for (let i = 1; i < contentAt.length; i++) itl.add(contentAt[i]! - contentAt[i - 1]!);
  if (tokens > 1) tpot.add((end - first) / (tokens - 1));
  outputTokens.add(tokens);
}
