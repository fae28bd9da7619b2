/**
 * Finds stop strings in streamed text that may be split across tokens. Text is released only once
 * it can no longer be the start of a stop string, so a client never sees part of one.
 */
export class StopStringMatcher {
  readonly #stops: string[];
  readonly #holdBack: number;
  #pending = '';

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
    this.#holdBack = Math.max(0, ...this.#stops.map((s) => s.length - 1));
  }

  /**
   * Adds decoded text. Returns the text now safe to emit and, when a stop string completed, which one
   * (the text returned then ends just before it).
   */
  push(text: string): { text: string; stop?: string } {
    this.#pending += text;
    if (this.#stops.length === 0) return { text: this.#take(this.#pending.length) };
    let first = -1;
    let which: string | undefined;
    for (const s of this.#stops) {
      const at = this.#pending.indexOf(s);
      if (at >= 0 && (first < 0 || at < first)) {
        first = at;
        which = s;
      }
    }
    if (which !== undefined) {
      const out = this.#pending.slice(0, first);
      this.#pending = '';
      return { text: out, stop: which };
    }
    return { text: this.#take(Math.max(0, this.#pending.length - this.#holdBack)) };
  }

  /** Everything still held back (the stream ended without a stop string). */
  flush(): string {
    return this.#take(this.#pending.length);
  }

  #take(n: number): string {
    const out = this.#pending.slice(0, n);
    this.#pending = this.#pending.slice(n);
    return out;
  }
}
