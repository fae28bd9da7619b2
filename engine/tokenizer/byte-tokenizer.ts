import type { Tokenizer } from './tokenizer.ts';

/**
 * Byte-level tokenizer for synthetic models: ids 0 <unk>, 1 <s>, 2 </s>, 3..258 the bytes 0x00..0xFF,
 * any ids above that print as <extra_N>. Lossless for any UTF-8 text, so the built-in default model
 * can serve real requests without shipping a vocabulary.
 */
export const BYTE_OFFSET = 3;
export const BYTE_TOKENIZER_MIN_VOCAB = BYTE_OFFSET + 256;

export class ByteTokenizer implements Tokenizer {
  readonly bosTokenId = 1;
  readonly eosTokenIds = [2] as const;
  readonly specialTokens = { bos: '<s>', eos: '</s>' };
  readonly chatTemplate = undefined;
  readonly vocabSize: number;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder('utf-8', { fatal: false });

  constructor(vocabSize: number) {
    if (vocabSize < BYTE_TOKENIZER_MIN_VOCAB) {
      throw new RangeError(`byte tokenizer needs vocab ≥ ${BYTE_TOKENIZER_MIN_VOCAB}, got ${vocabSize}`);
    }
    this.vocabSize = vocabSize;
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = Array.from(this.#encoder.encode(text), (b) => b + BYTE_OFFSET);
    return options.addBos ? [this.bosTokenId, ...ids] : ids;
  }

  decode(ids: readonly number[]): string {
    const bytes: number[] = [];
    let text = '';
    for (const id of ids) {
      if (id >= BYTE_OFFSET && id < BYTE_TOKENIZER_MIN_VOCAB) {
        bytes.push(id - BYTE_OFFSET);
      } else if (id >= BYTE_TOKENIZER_MIN_VOCAB) {
        text += this.#decoder.decode(Uint8Array.from(bytes.splice(0)));
        text += `<extra_${id}>`;
      }
    }
    return text + this.#decoder.decode(Uint8Array.from(bytes));
  }

  tokenText(id: number): string {
    if (id === 0) return '<unk>';
    if (id === 1) return '<s>';
    if (id === 2) return '</s>';
    if (id < BYTE_TOKENIZER_MIN_VOCAB) {
      const b = id - BYTE_OFFSET;
      return b >= 0x20 && b < 0x7f
        ? String.fromCharCode(b)
        : `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
    }
    return `<extra_${id}>`;
  }
}
