import { DropserveError } from '../errors.ts';
import { HfTokenizer } from './hf-tokenizer.ts';

/**
 * A GGUF `tokenizer.ggml.model = "gpt2"` vocabulary (byte-level BPE: Llama 3 and other tiktoken-style
 * models) as the Hugging Face tokenizer.json it was converted from, run by @huggingface/tokenizers.
 * The file keeps tokens (byte-level strings, "Ġ" for a space), merges ("a b", by rank) and the name
 * of the pre-tokenizer (`tokenizer.ggml.pre`); llama.cpp maps that name to a split regex, and so does
 * this module for the names it knows. llama.cpp reads a missing name as "default" (GPT-2's split).
 */

/** Llama 3's split (tiktoken cl100k style): contractions, letters, 1–3 digits, punctuation, spaces. */
export const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

type PreTokenizer = Record<string, unknown>;

const byteLevel = (useRegex: boolean): PreTokenizer => ({
  type: 'ByteLevel',
  add_prefix_space: false,
  trim_offsets: true,
  use_regex: useRegex,
});

/** `tokenizer.ggml.pre` → the tokenizer.json pre_tokenizer llama.cpp's split corresponds to. */
const PRE_TOKENIZERS: Record<string, { preTokenizer: PreTokenizer; ignoreMerges: boolean }> = {
  'llama-bpe': {
    preTokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false },
        byteLevel(false),
      ],
    },
    // Llama 3's tokenizer.json sets ignore_merges: a word that is itself a token is not split.
    ignoreMerges: true,
  },
  // GPT-2's own split is ByteLevel's built-in regex.
  default: { preTokenizer: byteLevel(true), ignoreMerges: false },
  'gpt-2': { preTokenizer: byteLevel(true), ignoreMerges: false },
};

export interface GgufBpeVocabulary {
  tokens: string[];
  tokenTypes?: number[];
  merges: string[];
  pre?: string;
  bosTokenId: number;
  eosTokenIds: number[];
  addBosToken: boolean;
  chatTemplate?: string;
}

const CONTROL = 3;
const USER_DEFINED = 4;

export function bpeTokenizerFromGguf(vocab: GgufBpeVocabulary, where: string): HfTokenizer {
  const pre = vocab.pre ?? 'default';
  const known = PRE_TOKENIZERS[pre];
  if (!known) {
    throw new DropserveError(
      'DS_UNSUPPORTED',
      `${where}: tokenizer.ggml.pre "${pre}" is not supported (supported: ${Object.keys(PRE_TOKENIZERS).join(', ')})`,
    );
  }
  const ids: Record<string, number> = {};
  vocab.tokens.forEach((token, id) => {
    if (!(token in ids)) ids[token] = id;
  });
  const types = vocab.tokenTypes ?? [];
  const addedTokens = vocab.tokens.flatMap((content, id) =>
    types[id] === CONTROL || types[id] === USER_DEFINED
      ? [
          {
            id,
            content,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special: types[id] === CONTROL,
          },
        ]
      : [],
  );
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: known.preTokenizer,
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: known.ignoreMerges,
      vocab: ids,
      merges: vocab.merges,
    },
  };
  return HfTokenizer.fromTokenizerJson(
    tokenizerJson,
    {
      bosTokenId: vocab.bosTokenId,
      eosTokenIds: vocab.eosTokenIds,
      addsBos: vocab.addBosToken,
      ...(vocab.chatTemplate !== undefined ? { chatTemplate: vocab.chatTemplate } : {}),
    },
    where,
  );
}
