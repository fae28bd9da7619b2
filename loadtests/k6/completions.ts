/**
 * k6: non-streaming /v1/completions under constant virtual users, with pass/fail thresholds on
 * p95 latency and the error rate.
 *
 *   k6 run -e URL=http://127.0.0.1:8000 -e MODEL=stories260K loadtests/k6/completions.ts
 *
 * Environment: URL, MODEL, API_KEY, VUS (4), DURATION (30s), MAX_TOKENS (64), PROMPT,
 * P95_MS (2000: http_req_duration p95 threshold), MAX_ERROR_RATE (0.01), IGNORE_EOS (1).
 */
import { check } from 'k6';
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';
import type { Options } from 'k6/options';

const BASE_URL = (__ENV.URL ?? 'http://127.0.0.1:8000').replace(/\/+$/, '');
const MODEL = __ENV.MODEL ?? 'stories260K';
const API_KEY = __ENV.API_KEY ?? '';
const MAX_TOKENS = Number(__ENV.MAX_TOKENS ?? '64');
const PROMPT = __ENV.PROMPT ?? 'Once upon a time, a little girl named Lily';

export const options: Options = {
  scenarios: {
    completions: {
      executor: 'constant-vus',
      vus: Number(__ENV.VUS ?? '4'),
      duration: __ENV.DURATION ?? '30s',
    },
  },
  thresholds: {
    http_req_failed: [`rate<${__ENV.MAX_ERROR_RATE ?? '0.01'}`],
    http_req_duration: [`p(95)<${__ENV.P95_MS ?? '2000'}`],
    checks: ['rate>0.99'],
  },
};

const completionTokens = new Counter('completion_tokens');
const msPerOutputToken = new Trend('ms_per_output_token', true);

interface CompletionResponse {
  choices?: { text?: string; finish_reason?: string }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number };
}

export default function (): void {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (API_KEY) headers.authorization = `Bearer ${API_KEY}`;
  const body = JSON.stringify({
    model: MODEL,
    prompt: PROMPT,
    max_tokens: MAX_TOKENS,
    temperature: 0,
    ignore_eos: (__ENV.IGNORE_EOS ?? '1') === '1',
  });
  const res = http.post(`${BASE_URL}/v1/completions`, body, { headers, tags: { name: 'completions' } });
  const parsed = res.status === 200 ? (res.json() as CompletionResponse) : {};
  const tokens = parsed.usage?.completion_tokens ?? 0;
  check(res, {
    'status is 200': (r) => r.status === 200,
    'has text': () => typeof parsed.choices?.[0]?.text === 'string',
    'reports usage': () => tokens > 0,
  });
  if (tokens > 0) {
    completionTokens.add(tokens);
    msPerOutputToken.add(res.timings.duration / tokens);
  }
}
