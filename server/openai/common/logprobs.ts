import type { TokenEvent } from '../../../engine/client.ts';
import type { TextDelta } from '../../../engine/output/text-generation.ts';
import type { Tokenizer } from '../../../engine/tokenizer/tokenizer.ts';

/** JSON has no -Infinity; vLLM sends this floor instead. */
const LOGPROB_FLOOR = -9999;
const finite = (x: number): number => (Number.isFinite(x) ? x : LOGPROB_FLOOR);

/** /v1/completions' legacy logprobs object. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

const emptyCompletionLogprobs = (): CompletionLogprobs => ({
  tokens: [],
  token_logprobs: [],
  top_logprobs: [],
  text_offset: [],
});

/** Decoded length of ids, not counting a trailing partial character. */
function decodedLength(tokenizer: Tokenizer, ids: readonly number[]): number {
  return tokenizer.decode(ids).replace(/\uFFFD+$/, '').length;
}

/**
 * Accumulates completions logprobs delta by delta. `text_offset` is where each token's text starts
 * in the returned text; within one delta it is found by decoding the delta's tokens (approximate when
 * a stop string held text back across deltas, but never decreasing).
 */
export class CompletionLogprobsBuilder {
  readonly #tokenizer: Tokenizer;
  readonly all: CompletionLogprobs = emptyCompletionLogprobs();
  #offset: number;

  constructor(tokenizer: Tokenizer, startOffset = 0) {
    this.#tokenizer = tokenizer;
    this.#offset = startOffset;
  }

  /** Prompt tokens (echo): the first has no logprob; `scored[i]` is token i+1's. */
  addPrompt(
    ids: readonly number[],
    text: string,
    scored: readonly number[],
    tops: readonly (Record<string, number> | null)[],
  ): void {
    const part = emptyCompletionLogprobs();
    ids.forEach((id, i) => {
      part.tokens.push(this.#tokenizer.tokenText(id));
      part.token_logprobs.push(i === 0 ? null : finite(scored[i - 1]!));
      part.top_logprobs.push(i === 0 ? null : (tops[i - 1] ?? null));
      part.text_offset.push(this.#offset + decodedLength(this.#tokenizer, ids.slice(0, i)));
    });
    this.#offset += text.length;
    this.#append(part);
  }

  /** The logprobs of one delta's tokens (what a stream chunk carries); also kept in `all`. */
  addDelta(delta: TextDelta): CompletionLogprobs {
    const part = emptyCompletionLogprobs();
    const ids = delta.tokens.map((t) => t.tokenId);
    delta.tokens.forEach((token, j) => {
      part.tokens.push(this.#tokenizer.tokenText(token.tokenId));
      part.token_logprobs.push(token.logprob === undefined ? null : finite(token.logprob));
      part.top_logprobs.push(this.#topOf(token));
      const within =
        j === 0 ? 0 : Math.min(delta.text.length, decodedLength(this.#tokenizer, ids.slice(0, j)));
      part.text_offset.push(this.#offset + within);
    });
    this.#offset += delta.text.length;
    this.#append(part);
    return part;
  }

  #topOf(token: TokenEvent): Record<string, number> {
    const top: Record<string, number> = {};
    for (const alt of token.topLogprobs ?? [])
      top[this.#tokenizer.tokenText(alt.tokenId)] = finite(alt.logprob);
    // vLLM's convention: the sampled token is always among the alternatives.
    const chosen = this.#tokenizer.tokenText(token.tokenId);
    if (!(chosen in top) && token.logprob !== undefined) top[chosen] = finite(token.logprob);
    return top;
  }

  #append(part: CompletionLogprobs): void {
    this.all.tokens.push(...part.tokens);
    this.all.token_logprobs.push(...part.token_logprobs);
    this.all.top_logprobs.push(...part.top_logprobs);
    this.all.text_offset.push(...part.text_offset);
  }
}

/** Top-k of one log-softmax row, as a {token text: logprob} map (prompt logprobs for echo). */
export function topOfDistribution(
  tokenizer: Tokenizer,
  row: Float32Array,
  k: number,
): Record<string, number> {
  const best: { id: number; logprob: number }[] = [];
  for (let id = 0; id < row.length; id++) {
    const logprob = row[id]!;
    if (best.length < k) best.push({ id, logprob });
    else if (logprob > best[best.length - 1]!.logprob) best[best.length - 1] = { id, logprob };
    else continue;
    best.sort((a, b) => b.logprob - a.logprob);
  }
  const top: Record<string, number> = {};
  for (const b of best) top[tokenizer.tokenText(b.id)] = finite(b.logprob);
  return top;
}

/** /v1/chat/completions' `logprobs.content[]` entry. */
export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
  top_logprobs: { token: string; logprob: number; bytes: number[] | null }[];
}

/** UTF-8 bytes of a token: a byte-fallback piece like "<0x0A>" is that one byte. */
function bytesOf(tokenizer: Tokenizer, id: number): number[] {
  const piece = /^<0x([0-9A-Fa-f]{2})>$/.exec(tokenizer.tokenText(id));
  if (piece) return [Number.parseInt(piece[1]!, 16)];
  return [...Buffer.from(tokenizer.decode([id]), 'utf8')];
}

export function chatLogprobsOf(
  tokenizer: Tokenizer,
  tokens: readonly TokenEvent[],
  topN: number,
): ChatTokenLogprob[] {
  return tokens.map((t) => ({
    token: tokenizer.tokenText(t.tokenId),
    logprob: finite(t.logprob ?? LOGPROB_FLOOR),
    bytes: bytesOf(tokenizer, t.tokenId),
    top_logprobs: (t.topLogprobs ?? []).slice(0, topN).map((alt) => ({
      token: tokenizer.tokenText(alt.tokenId),
      logprob: finite(alt.logprob),
      bytes: bytesOf(tokenizer, alt.tokenId),
    })),
  }));
}
