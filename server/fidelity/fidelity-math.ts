/**
 * How far a pruned variant's generation is from what the full model would have done, per generated
 * position, given the full model's log-softmax row p (teacher-forced over prompt + pruned output)
 * and the pruned model's own row q recorded when it sampled the token.
 */
export interface PositionFidelity {
  /** The full model's argmax is the token the pruned variant chose. */
  agrees: boolean;
  /** KL(full ‖ pruned) = Σ p·(log p − log q), in nats. */
  kl: number;
  /** Full-model NLL of the pruned token minus NLL of the full model's own argmax (≥ 0). */
  deltaNll: number;
}

export function positionFidelity(
  fullLogprobs: Float32Array,
  prunedLogprobs: Float32Array | undefined,
  chosenToken: number,
): PositionFidelity {
  let best = 0;
  for (let i = 1; i < fullLogprobs.length; i++) if (fullLogprobs[i]! > fullLogprobs[best]!) best = i;
  let kl = Number.NaN;
  if (prunedLogprobs) {
    kl = 0;
    for (let i = 0; i < fullLogprobs.length; i++) {
      const lp = fullLogprobs[i]!;
      // exp(lp) underflows to 0 for hopeless tokens, whose terms vanish anyway.
      if (lp > -80) kl += Math.exp(lp) * (lp - prunedLogprobs[i]!);
    }
    kl = Math.max(0, kl);
  }
  return {
    agrees: best === chosenToken,
    kl,
    deltaNll: fullLogprobs[best]! - fullLogprobs[chosenToken]!,
  };
}

export interface RequestFidelity {
  positions: number;
  agreement: number;
  klMean: number;
  deltaNllMean: number;
}

export function summarize(positions: PositionFidelity[]): RequestFidelity {
  const n = positions.length;
  const mean = (f: (p: PositionFidelity) => number): number =>
    n === 0 ? 0 : positions.reduce((s, p) => s + f(p), 0) / n;
  return {
    positions: n,
    agreement: mean((p) => (p.agrees ? 1 : 0)),
    klMean: mean((p) => p.kl),
    deltaNllMean: mean((p) => p.deltaNll),
  };
}
