/** A running sequence whose prompt may be shared: its prompt and how many tokens its row caches. */
export interface PrefixDonor {
  id: string;
  tokens: readonly number[];
  cached: number;
}

/**
 * The donor sharing the longest prefix with `tokens`, and that prefix's length, or null. At most
 * tokens.length − 1, so the last position is always computed (its logits give the next token). A
 * linear scan: running sequences per variant are few.
 */
export function findSharedPrefix(
  tokens: readonly number[],
  donors: readonly PrefixDonor[],
): { donorId: string; tokens: number } | null {
  let best: { donorId: string; tokens: number } | null = null;
  for (const donor of donors) {
    const limit = Math.min(tokens.length - 1, donor.tokens.length, donor.cached);
    let shared = 0;
    while (shared < limit && donor.tokens[shared] === tokens[shared]) shared++;
    if (shared > (best?.tokens ?? 0)) best = { donorId: donor.id, tokens: shared };
  }
  return best;
}
