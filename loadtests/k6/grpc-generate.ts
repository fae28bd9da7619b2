/**
 * k6: server-streaming gRPC `dropserve.v1.Dropserve/Generate` (core k6/net/grpc Stream, k6 ≥ 0.49),
 * timing the stream like the HTTP load generator: TTFT = first message with text, ITL between
 * text messages, TPOT from the final usage.
 *
 *   k6 run -e GRPC_ADDR=127.0.0.1:50051 -e MODEL=stories260K loadtests/k6/grpc-generate.ts
 *
 * Environment: GRPC_ADDR, MODEL, API_KEY, VUS (4), DURATION (30s), MAX_TOKENS (64), PROMPT,
 * TTFT_P95_MS (1000), MAX_ERROR_RATE (0.01).
 */
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import grpc from 'k6/net/grpc';
import type { Options } from 'k6/options';

const ADDR = __ENV.GRPC_ADDR ?? '127.0.0.1:50051';
const MODEL = __ENV.MODEL ?? 'stories260K';
const API_KEY = __ENV.API_KEY ?? '';
const MAX_TOKENS = Number(__ENV.MAX_TOKENS ?? '64');
const PROMPT = __ENV.PROMPT ?? 'Once upon a time, a little girl named Lily';

export const options: Options = {
  scenarios: {
    generate: { executor: 'constant-vus', vus: Number(__ENV.VUS ?? '4'), duration: __ENV.DURATION ?? '30s' },
  },
  thresholds: {
    grpc_ttft: [`p(95)<${__ENV.TTFT_P95_MS ?? '1000'}`],
    grpc_failed: [`rate<${__ENV.MAX_ERROR_RATE ?? '0.01'}`],
  },
};

// Paths are relative to this script; load() must run in the init context.
const client = new grpc.Client();
client.load(['../../proto'], 'dropserve.proto');

const ttft = new Trend('grpc_ttft', true);
const itl = new Trend('grpc_itl', true);
const tpot = new Trend('grpc_tpot', true);
const e2e = new Trend('grpc_e2e', true);
const outputTokens = new Counter('grpc_output_tokens');
const failed = new Rate('grpc_failed');

/** GenerateResponse as k6 decodes it (protojson: lowerCamelCase names; snake_case kept as fallback). */
interface GenerateMessage {
  text?: string;
  tokenIds?: number[];
  finishReason?: string;
  finish_reason?: string;
  usage?: { completionTokens?: number; completion_tokens?: number };
}

let isConnected = false;

export default function (): void {
  if (!isConnected) {
    client.connect(ADDR, { plaintext: true });
    isConnected = true;
  }
  const metadata: Record<string, string> = API_KEY ? { authorization: `Bearer ${API_KEY}` } : {};
  const stream = new grpc.Stream(client, 'dropserve.v1.Dropserve/Generate', { metadata });

  const sentAt = Date.now();
  const textAt: number[] = [];
  let finishReason = '';
  let completionTokens: number | undefined;
  let lastAt = 0;

  stream.on('data', (data) => {
    const message = data as GenerateMessage;
    const now = Date.now();
    if (message.text) textAt.push(now);
    const reason = message.finishReason ?? message.finish_reason ?? '';
    if (reason !== '') {
      finishReason = reason;
      lastAt = now;
      completionTokens = message.usage?.completionTokens ?? message.usage?.completion_tokens;
    }
  });

  let hasError = false;
  stream.on('error', () => {
    hasError = true;
    failed.add(true);
  });

  stream.on('end', () => {
    if (hasError) return;
    const isOk = finishReason !== '' && textAt.length > 0;
    check(null, {
      'stream ended with a finish_reason': () => finishReason !== '',
      'generated text': () => textAt.length > 0,
    });
    failed.add(!isOk);
    if (!isOk) return;
    const tokens = completionTokens ?? textAt.length;
    const end = lastAt || textAt[textAt.length - 1]!;
    ttft.add(textAt[0]! - sentAt);
    e2e.add(end - sentAt);
    for (let i = 1; i < textAt.length; i++) itl.add(textAt[i]! - textAt[i - 1]!);
    if (tokens > 1) tpot.add((end - textAt[0]!) / (tokens - 1));
    outputTokens.add(tokens);
  });

  // Server streaming: one request, then half-close.
  stream.write({ model: MODEL, prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0, ignore_eos: true });
  stream.end();
}
