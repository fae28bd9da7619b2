import { describe, expect, it } from 'vitest';
import { type SseEvent, SseParser } from './sse-parser.ts';

const encoder = new TextEncoder();

function parseInPieces(bytes: Uint8Array, cuts: number[]): SseEvent[] {
  const parser = new SseParser();
  const events: SseEvent[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    events.push(...parser.push(bytes.subarray(start, cut)));
    start = cut;
  }
  events.push(...parser.end());
  return events;
}

describe('SseParser', () => {
  const stream =
    ': keep-alive comment\r\n' +
    'data: {"choices":[{"text":" héllo 🌍"}]}\r\n\r\n' +
    'event: error\ndata: line one\ndata:line two\nid: 7\n\n' +
    'data: {"usage":{"completion_tokens":2}}\r\r' +
    'retry: 100\nunknown: field\n\n' +
    'data: [DONE]\n\n';
  const expected: SseEvent[] = [
    { type: 'message', data: '{"choices":[{"text":" héllo 🌍"}]}' },
    { type: 'error', data: 'line one\nline two', lastEventId: '7' },
    { type: 'message', data: '{"usage":{"completion_tokens":2}}', lastEventId: '7' },
    { type: 'message', data: '[DONE]', lastEventId: '7' },
  ];
  const bytes = encoder.encode(stream);

  it('parses a whole stream with \\n, \\r\\n and \\r line ends, comments, ids and multi-line data', () => {
    expect(parseInPieces(bytes, [])).toEqual(expected);
  });

  it('gives the same events however the bytes are split: every single cut and every pair of cuts', () => {
    for (let cut = 1; cut < bytes.length; cut++) {
      expect(parseInPieces(bytes, [cut]), `cut at byte ${cut}`).toEqual(expected);
    }
    for (let a = 1; a < bytes.length; a += 3) {
      for (let b = a + 1; b < bytes.length; b += 5) expect(parseInPieces(bytes, [a, b])).toEqual(expected);
    }
  });

  it('survives one byte at a time, including inside multi-byte UTF-8 characters', () => {
    expect(
      parseInPieces(
        bytes,
        Array.from({ length: bytes.length - 1 }, (_, i) => i + 1),
      ),
    ).toEqual(expected);
  });

  it('dispatches a last event that the server closed without a blank line', () => {
    expect(parseInPieces(encoder.encode('data: a\n\ndata: [DONE]'), [])).toEqual([
      { type: 'message', data: 'a' },
      { type: 'message', data: '[DONE]' },
    ]);
  });

  it('does not dispatch blank events or comment-only blocks', () => {
    expect(parseInPieces(encoder.encode(': ping\n\n\n\nevent: x\n\n'), [])).toEqual([]);
  });
});
