/**
 * Incremental Server-Sent Events parser (WHATWG "event stream interpretation"). Network reads can
 * split the stream anywhere — inside a line, between `\r` and `\n`, inside a multi-byte UTF-8
 * character — so bytes are decoded in streaming mode and partial lines are carried over.
 */

export interface SseEvent {
  /** `event:` field; "message" when absent. */
  type: string;
  /** `data:` lines joined with "\n". */
  data: string;
  /** Last `id:` seen so far in the stream, if any. */
  lastEventId?: string;
}

export class SseParser {
  readonly #decoder = new TextDecoder('utf-8');
  #partialLine = '';
  #isAfterCr = false;
  #dataLines: string[] = [];
  #eventType = '';
  #lastEventId: string | undefined;

  /** Feeds one network read; returns the events it completed. */
  push(bytes: Uint8Array): SseEvent[] {
    return this.#consume(this.#decoder.decode(bytes, { stream: true }));
  }

  /**
   * Ends the stream. The spec drops an event with no blank line after it; servers that close right
   * after the last `data:` line are common enough that it is dispatched instead.
   */
  end(): SseEvent[] {
    const events = this.#consume(this.#decoder.decode());
    if (this.#partialLine !== '') {
      this.#processLine(this.#partialLine, events);
      this.#partialLine = '';
    }
    this.#dispatch(events);
    return events;
  }

  #consume(text: string): SseEvent[] {
    const events: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const ch = text.charCodeAt(i);
      if (ch === 0x0a && this.#isAfterCr && i === start && this.#partialLine === '') {
        // second half of a "\r\n" split across reads (or right after a "\r" line end)
        this.#isAfterCr = false;
        start = i + 1;
        continue;
      }
      this.#isAfterCr = false;
      if (ch === 0x0a || ch === 0x0d) {
        this.#processLine(this.#partialLine + text.slice(start, i), events);
        this.#partialLine = '';
        if (ch === 0x0d) {
          if (i + 1 < text.length && text.charCodeAt(i + 1) === 0x0a) i++;
          else if (i + 1 === text.length) this.#isAfterCr = true;
        }
        start = i + 1;
      }
    }
    this.#partialLine += text.slice(start);
    return events;
  }

  #processLine(line: string, events: SseEvent[]): void {
    if (line === '') {
      this.#dispatch(events);
      return;
    }
    if (line.startsWith(':')) return; // comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.#dataLines.push(value);
        break;
      case 'event':
        this.#eventType = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.#lastEventId = value;
        break;
      default: // "retry" and unknown fields do not matter to a load generator
        break;
    }
  }

  #dispatch(events: SseEvent[]): void {
    if (this.#dataLines.length > 0) {
      const event: SseEvent = { type: this.#eventType || 'message', data: this.#dataLines.join('\n') };
      if (this.#lastEventId !== undefined) event.lastEventId = this.#lastEventId;
      events.push(event);
    }
    this.#dataLines = [];
    this.#eventType = '';
  }
}
