import type { Tokenizer } from './tokenizer.ts';

/**
 * Streams text for generated tokens so that the pieces, joined, equal the text that decoding the
 * whole sequence adds after the prompt, and no piece ends in a broken UTF-8 character.
 *
 * Token-by-token decoding is wrong for SentencePiece-style tokenizers (a piece's leading space is
 * dropped at the start of a decode) and for byte-fallback tokens (one character spread over several
 * ids). So, as vLLM and TGI do, each step decodes a short window twice, [prefix, read) and
 * [prefix, end), and emits the difference. The window restarts after every emitted step, so a step
 * costs O(window), not O(sequence). A decode that ends in U+FFFD may be an incomplete character:
 * it is held back until a later token completes it, or until flush().
 *
 *   ids:  … p p p p p | r r r (new) …
 *          prefixOffset  readOffset
 */

/** Tokens of context kept before the read offset when starting from a prompt. */
const PROMPT_CONTEXT_TOKENS = 5;
const REPLACEMENT_CHAR = '\uFFFD';

export class IncrementalDetokenizer {
  readonly #tokenizer: Tokenizer;
  readonly #ids: number[];
  #prefixOffset: number;
  #readOffset: number;

  constructor(tokenizer: Tokenizer, promptIds: readonly number[] = []) {
    this.#tokenizer = tokenizer;
    // Only the tail of the prompt matters; keep just that, so memory stays O(window) too.
    const tail = promptIds.slice(Math.max(0, promptIds.length - PROMPT_CONTEXT_TOKENS));
    this.#ids = [...tail];
    this.#prefixOffset = 0;
    this.#readOffset = tail.length;
  }

  /** Adds one generated id; returns the text that became final (often "", never a broken char). */
  push(id: number): string {
    this.#ids.push(id);
    const prefixText = this.#decode(this.#prefixOffset, this.#readOffset);
    const fullText = this.#decode(this.#prefixOffset, this.#ids.length);
    if (fullText.length <= prefixText.length || fullText.endsWith(REPLACEMENT_CHAR)) return '';
    this.#advance();
    return fullText.slice(prefixText.length);
  }

  /** Everything still held back (an incomplete character decodes to U+FFFD here, as in decode()). */
  flush(): string {
    const prefixText = this.#decode(this.#prefixOffset, this.#readOffset);
    const fullText = this.#decode(this.#prefixOffset, this.#ids.length);
    this.#advance();
    return fullText.length > prefixText.length ? fullText.slice(prefixText.length) : '';
  }

  /** Ids held for the decode window (bounded for a stream of ordinary text; for tests and metrics). */
  get windowTokens(): number {
    return this.#ids.length;
  }

  #decode(from: number, to: number): string {
    return from < to ? this.#tokenizer.decode(this.#ids.slice(from, to)) : '';
  }

  /** The window now starts where the last read ended; drop ids before it. */
  #advance(): void {
    this.#ids.splice(0, this.#readOffset);
    this.#prefixOffset = 0;
    this.#readOffset = this.#ids.length;
  }
}
