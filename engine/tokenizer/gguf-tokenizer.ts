import { DropserveError } from '../errors.ts';
import { bpeTokenizerFromGguf } from './gguf-bpe-tokenizer.ts';
import { Llama2cTokenizer } from './llama2c-tokenizer.ts';
import type { Tokenizer } from './tokenizer.ts';

/**
 * The tokenizer embedded in a GGUF file. `tokenizer.ggml.model = "llama"` is a SentencePiece
 * vocabulary: llama.cpp tokenizes it by merging the adjacent pair whose merged piece scores highest,
 * with byte fallback to `<0xNN>` pieces — the same algorithm llama2.c runs over (piece, score), so
 * it is served by Llama2cTokenizer with GGUF's conventions (▁ for spaces in pieces, byte pieces
 * looked up by name, control tokens silent). "gpt2" (byte-level BPE) goes to gguf-bpe-tokenizer.ts.
 */

/** `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type). */
export const GgufTokenType = {
  normal: 1,
  unknown: 2,
  control: 3,
  userDefined: 4,
  unused: 5,
  byte: 6,
} as const;

const SPACE_MARK = '\u2581';

export interface GgufVocabulary {
  /** `tokenizer.ggml.model`. */
  model: string;
  tokens: string[];
  scores?: number[];
  tokenTypes?: number[];
  bosTokenId?: number;
  eosTokenId?: number;
  unknownTokenId?: number;
  addSpacePrefix?: boolean;
  addBosToken?: boolean;
  chatTemplate?: string;
  /** "gpt2" vocabularies: `tokenizer.ggml.merges` and `tokenizer.ggml.pre`. */
  merges?: string[];
  pre?: string;
}

export function tokenizerFromGguf(vocab: GgufVocabulary, where: string): Tokenizer {
  if (vocab.model === 'gpt2') {
    if (!vocab.merges)
      throw new DropserveError(
        'DS_MODEL_LOAD',
        `${where}: a "gpt2" vocabulary without tokenizer.ggml.merges`,
      );
    return bpeTokenizerFromGguf(
      {
        tokens: vocab.tokens,
        ...(vocab.tokenTypes ? { tokenTypes: vocab.tokenTypes } : {}),
        merges: vocab.merges,
        ...(vocab.pre !== undefined ? { pre: vocab.pre } : {}),
        bosTokenId: vocab.bosTokenId ?? 0,
        eosTokenIds: [vocab.eosTokenId ?? vocab.bosTokenId ?? 0],
        // llama.cpp adds BOS to "gpt2" vocabularies only when the file asks for it.
        addBosToken: vocab.addBosToken ?? false,
        ...(vocab.chatTemplate !== undefined ? { chatTemplate: vocab.chatTemplate } : {}),
      },
      where,
    );
  }
  if (vocab.model !== 'llama') {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${where}: tokenizer.ggml.model "${vocab.model}" is not supported; "llama" (SentencePiece) and ` +
        '"gpt2" (byte-level BPE) vocabularies are',
    );
  }
  const { tokens } = vocab;
  const scores = vocab.scores ?? [];
  if (scores.length !== tokens.length) {
    throw new DropserveError(
      'DS_MODEL_LOAD',
      `${where}: tokenizer.ggml.scores has ${scores.length} entries for ${tokens.length} tokens`,
    );
  }
  const types = vocab.tokenTypes ?? [];
  const silentIds: number[] = [];
  types.forEach((t, id) => {
    if (t === GgufTokenType.control || t === GgufTokenType.unused) silentIds.push(id);
  });
  // Llama2cTokenizer works on byte strings (one char per UTF-8 byte) with plain spaces.
  const pieces = tokens.map((t) => Buffer.from(t.replaceAll(SPACE_MARK, ' '), 'utf8').toString('latin1'));
  const maxTokenLength = pieces.reduce((m, p) => Math.max(m, p.length), 1);
  const bosTokenId = vocab.bosTokenId ?? 1;
  const eosTokenId = vocab.eosTokenId ?? 2;
  return new Llama2cTokenizer(pieces, Float32Array.from(scores), maxTokenLength, {
    bosTokenId,
    eosTokenIds: [eosTokenId],
    specialTokens: { bos: tokens[bosTokenId], eos: tokens[eosTokenId] },
    ...(vocab.chatTemplate !== undefined ? { chatTemplate: vocab.chatTemplate } : {}),
    byteFallback: 'pieces',
    unknownTokenId: vocab.unknownTokenId ?? 0,
    silentIds,
    addSpacePrefix: vocab.addSpacePrefix ?? true,
    addsBos: vocab.addBosToken ?? true,
  });
}

/** The inverse, for writing a GGUF: a tokenizer's pieces as GGUF tokens (spaces as ▁). */
export function ggufPieceText(text: string): string {
  return text.replaceAll(' ', SPACE_MARK);
}
