import { LLAMA3_SPLIT } from '../gguf-bpe-tokenizer.ts';

/**
 * Test support: a small byte-level BPE vocabulary. Ids 0..255 are the byte symbols of GPT-2's
 * byte-to-unicode table (by byte value), then one token per merge, then two control tokens.
 */
export function gpt2ByteSymbols(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const symbols = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) symbols[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return symbols;
}

/** "3 4" before "1 2" / "12 3": GPT-2's split merges across the digits Llama 3's split cuts in threes. */
export const TEST_MERGES = ['3 4', '1 2', '12 3', 'Ġ t', 'h e', 'Ġt he'];
export const TEST_TOKENS = [
  ...gpt2ByteSymbols(),
  ...TEST_MERGES.map((m) => m.replace(' ', '')),
  '<|begin_of_text|>',
  '<|eot_id|>',
];

/** The same vocabulary as a Llama 3 style tokenizer.json. */
export function llama3StyleTokenizerJson(): Record<string, unknown> {
  const vocab = Object.fromEntries(TEST_TOKENS.map((t, id) => [t, id]));
  const specials = TEST_TOKENS.length - 2;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [specials, specials + 1].map((id) => ({
      id,
      content: TEST_TOKENS[id],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
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
      ignore_merges: true,
      vocab,
      merges: TEST_MERGES,
    },
  };
}
