import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { errorBody, HttpProblem } from './errors.ts';

/**
 * Answers for requests that never reach the app: the ones Node's HTTP parser rejects (bad method,
 * bad or duplicate Content-Length, headers too large, a bad chunk size, a header timeout) and CONNECT.
 * Left to Node, the first get a status line with an empty body and CONNECT gets no answer at all;
 * here every one gets the same OpenAI-shaped JSON error the app sends, then the connection closes
 * (the parser cannot find where the next request would start).
 */
export function installEdgeErrorHandlers(server: Server): void {
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    if (error.code === 'ECONNRESET' || !socket.writable || isResponseUnderway(socket)) {
      socket.destroy();
      return;
    }
    answerAndClose(socket, parserProblem(error));
  });
  server.on('connect', (_request: IncomingMessage, socket: Duplex) => {
    const problem = new HttpProblem(405, 'CONNECT is not supported: this server is not a proxy', {
      type: 'invalid_request_error',
      code: 'method_not_allowed',
    });
    // Errors on a socket nobody else watches would otherwise be thrown as unhandled.
    socket.on('error', () => socket.destroy());
    answerAndClose(socket, problem, { Allow: 'GET, POST' });
  });
}

/** How long a client gets to close its side after the error answer before the socket is cut. */
const LINGER_MS = 2_000;

/**
 * end(), not destroy(): destroying with unread request bytes still buffered (a header overflow)
 * resets the connection, and the client may lose the answer. A client that never closes its side is
 * cut after LINGER_MS.
 */
function answerAndClose(
  socket: Duplex,
  problem: HttpProblem,
  extraHeaders: Record<string, string> = {},
): void {
  socket.end(rawResponse(problem, extraHeaders));
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}

/** The status and message for a parser error code (llhttp's HPE_* and Node's timeouts). */
export function parserProblem(error: NodeJS.ErrnoException): HttpProblem {
  const invalid = (status: number, message: string, code: string): HttpProblem =>
    new HttpProblem(status, message, { type: 'invalid_request_error', code });
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return invalid(431, 'request headers are too large', 'headers_too_large');
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return invalid(413, 'chunk extensions are too large', 'request_too_large');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return invalid(408, 'the request was not received in time', 'request_timeout');
    case 'HPE_INVALID_METHOD':
      return invalid(400, 'malformed request: unknown HTTP method', 'invalid_method');
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return invalid(
        400,
        'malformed request: invalid, duplicate or conflicting Content-Length',
        'invalid_content_length',
      );
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return invalid(
        400,
        'malformed request: invalid Transfer-Encoding, or Transfer-Encoding beside Content-Length',
        'invalid_transfer_encoding',
      );
    case 'HPE_INVALID_CHUNK_SIZE':
      return invalid(400, 'malformed request: invalid chunk size in a chunked body', 'invalid_chunk_size');
    default: {
      // llhttp's reason ("Invalid header value char", …) names the fault without echoing input.
      const reason = (error as { reason?: unknown }).reason;
      const detail = typeof reason === 'string' && reason !== '' ? `: ${reason}` : '';
      return invalid(400, `malformed HTTP request${detail}`, 'malformed_request');
    }
  }
}

/** A parse error in a pipelined request after a response has started: no clean answer is possible. */
function isResponseUnderway(socket: Duplex): boolean {
  const response = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  return response?.headersSent === true;
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Payload Too Large',
  431: 'Request Header Fields Too Large',
};

function rawResponse(problem: HttpProblem, extraHeaders: Record<string, string> = {}): string {
  const body = JSON.stringify(errorBody(problem));
  const headers = {
    'Content-Type': 'application/json',
    'Content-Length': String(Buffer.byteLength(body)),
    Connection: 'close',
    ...extraHeaders,
  };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}`);
  return `HTTP/1.1 ${problem.status} ${REASONS[problem.status] ?? 'Error'}\r\n${lines.join('\r\n')}\r\n\r\n${body}`;
}
