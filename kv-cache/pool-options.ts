import { DEFAULT_KV_BLOCK_TOKENS } from './kv-layout.ts';

/** What every KV pool is made with, host or device. */
export interface KvPoolOptions {
  /** Bytes all arenas' buffers may hold together (`--kv-cache-bytes`). */
  budgetBytes: number;
  /** Tokens per block (`--kv-block-tokens`, default 16). */
  blockTokens?: number;
}

/** The options checked, with the default block size applied; RangeError naming a bad value. */
export function checkPoolOptions(options: KvPoolOptions): { budgetBytes: number; blockTokens: number } {
  const { budgetBytes, blockTokens = DEFAULT_KV_BLOCK_TOKENS } = options;
  if (!Number.isFinite(budgetBytes) || budgetBytes <= 0) {
    throw new RangeError(`KV cache budget must be a positive number of bytes, got ${budgetBytes}`);
  }
  if (!Number.isInteger(blockTokens) || blockTokens <= 0) {
    throw new RangeError(`KV block size must be a positive whole number of tokens, got ${blockTokens}`);
  }
  return { budgetBytes, blockTokens };
}
