/** What the engine and the transports need from any tokenizer (llama2.c .bin or HF tokenizer.json). */
export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number;
  /** Token ids that end generation. */
  readonly eosTokenIds: readonly number[];
  /** Text → ids. With addBos, the model's BOS id is prepended (as llama2.c and HF Llama do). */
  encode(text: string, options?: { addBos?: boolean }): number[];
  /**
   * Ids → text. Special tokens (BOS/EOS) are skipped. A prefix of a multi-byte character decodes
   * to U+FFFD; IncrementalDetokenizer holds such tails back.
   */
  decode(ids: readonly number[]): string;
  /** The printable piece of one id, for logprobs' token strings. */
  tokenText(id: number): string;
  /** Jinja chat template from tokenizer_config.json, when the model ships one. */
  readonly chatTemplate?: string;
  /** Special token strings that chat templates refer to (bos_token, eos_token). */
  readonly specialTokens: { bos?: string; eos?: string };
}
