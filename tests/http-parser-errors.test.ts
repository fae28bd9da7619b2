import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parserProblem } from '../server/http/edge-errors.ts';
import { startTestServer, type TestServer } from './support/test-server.ts';

/**
 * Requests Node's HTTP parser rejects before the app sees them, and CONNECT: each gets a status line,
 * an OpenAI-shaped JSON error body and `Connection: close`, written on a raw socket as a broken
 * client would; the server keeps serving afterwards.
 */
let t: TestServer;
let port: number;

beforeAll(async () => {
  t = await startTestServer();
  port = Number(new URL(t.url).port);
});
afterAll(async () => {
  await t?.close();
});

interface RawReply {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Writes raw bytes, reads until the server closes the connection, parses the one response. */
function exchange(request: string): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const split = text.indexOf('\r\n\r\n');
      if (split < 0) {
        reject(new Error(`no complete response: ${JSON.stringify(text)}`));
        return;
      }
      const [statusLine, ...headerLines] = text.slice(0, split).split('\r\n');
      const headers = new Map<string, string>();
      for (const line of headerLines) {
        const colon = line.indexOf(':');
        headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
      resolve({ status: Number(statusLine!.split(' ')[1]), headers, body: text.slice(split + 4) });
    });
    socket.write(request);
  });
}

function errorOf(reply: RawReply): { message: string; type: string; param: null; code: string } {
  expect(reply.headers.get('content-type')).toBe('application/json');
  expect(reply.headers.get('connection')).toBe('close');
  expect(Number(reply.headers.get('content-length'))).toBe(Buffer.byteLength(reply.body));
  const json = JSON.parse(reply.body) as {
    error: { message: string; type: string; param: null; code: string };
  };
  expect(Object.keys(json)).toEqual(['error']);
  expect(Object.keys(json.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(json.error.param).toBeNull();
  return json.error;
}

const post = (headers: string, body = ''): string =>
  `POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n${headers}\r\n${body}`;

describe('requests the HTTP parser rejects', () => {
  it.each([
    ['an unknown method', 'FROB /health HTTP/1.1\r\nHost: localhost\r\n\r\n', 400, 'invalid_method'],
    [
      'a negative Content-Length',
      post('Content-Type: application/json\r\nContent-Length: -1\r\n', '{}'),
      400,
      'invalid_content_length',
    ],
    [
      'a duplicate Content-Length',
      post('Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n', '{}'),
      400,
      'invalid_content_length',
    ],
    [
      'Content-Length beside chunked Transfer-Encoding',
      post('Content-Length: 2\r\nTransfer-Encoding: chunked\r\n', '2\r\n{}\r\n0\r\n\r\n'),
      400,
      'invalid_transfer_encoding',
    ],
    [
      'a bad chunk size',
      post('Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n', 'zz\r\n{}\r\n0\r\n\r\n'),
      400,
      'invalid_chunk_size',
    ],
    [
      'headers larger than the limit',
      `GET /health HTTP/1.1\r\nHost: localhost\r\nX-Filler: ${'a'.repeat(64 * 1024)}\r\n\r\n`,
      431,
      'headers_too_large',
    ],
    ['a header without a colon', 'GET /health HTTP/1.1\r\nHost localhost\r\n\r\n', 400, 'malformed_request'],
  ])('%s: the status and a JSON error body', async (_name, request, status, code) => {
    const reply = await exchange(request);
    expect(reply.status).toBe(status);
    const error = errorOf(reply);
    expect(error.type).toBe('invalid_request_error');
    expect(error.code).toBe(code);
    expect(error.message.length).toBeGreaterThan(0);
  });

  it('CONNECT gets a 405 with a JSON error body instead of a silent close', async () => {
    const reply = await exchange('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    expect(reply.status).toBe(405);
    expect(reply.headers.get('allow')).toBe('GET, POST');
    const error = errorOf(reply);
    expect(error.type).toBe('invalid_request_error');
    expect(error.code).toBe('method_not_allowed');
  });

  it("maps a header timeout to 408 and an unknown parser error to 400 with llhttp's reason", () => {
    const timeout = parserProblem(Object.assign(new Error('timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }));
    expect([timeout.status, timeout.code]).toEqual([408, 'request_timeout']);
    const other = parserProblem(
      Object.assign(new Error('Parse Error'), { code: 'HPE_SOMETHING_NEW', reason: 'Something new' }),
    );
    expect([other.status, other.code, other.message]).toEqual([
      400,
      'malformed_request',
      'malformed HTTP request: Something new',
    ]);
  });

  it('keeps serving after every kind of malformed request', async () => {
    const health = await fetch(`${t.url}/health`);
    expect(health.status).toBe(200);
  });
});
