/**
 * Monte-Carlo Shapley values of removing sublayers (Siddiqui et al. 2024, with the LM loss as the
 * game's value). Players are candidate sublayers; v(S) = calibration loss with the set S removed.
 * A player's Shapley value is its marginal effect v(S ∪ {i}) − v(S) averaged over all orders in which
 * players could be removed.
 *
 * Estimator: walk random permutations of the players, removing them one at a time, and credit each
 * player with the change in loss its removal caused. Within one permutation the marginals telescope
 * to v(all) − v(none), so the estimate (the mean over permutations) sums to exactly that too, up to
 * rounding. Permutations come in antithetic pairs (an order and its reverse) by default, which cancels
 * much of the "removed early vs. removed late" variance. A low value = removing it costs little.
 */
import { SeededRandom } from '../engine/model/random.ts';
import { throwIfAborted } from './batches.ts';

export interface ShapleyOptions {
  /** Number of permutations walked (the sample budget); rounded up to even when antithetic. */
  permutations: number;
  seed?: number;
  antithetic?: boolean;
  signal?: AbortSignal;
  onPermutation?: (done: number, total: number) => void;
}

export interface ShapleyResult {
  /** Per player, in the order given. */
  values: number[];
  /** Per player, standard error of the mean over permutations. */
  standardErrors: number[];
  valueOfNone: number;
  valueOfAll: number;
  permutations: number;
}

/**
 * `value(removed)` gets a set of player indices (ascending); it should memoise, since permutations
 * revisit sets.
 */
export async function shapleyValues(
  numPlayers: number,
  value: (removed: number[]) => Promise<number>,
  options: ShapleyOptions,
): Promise<ShapleyResult> {
  const antithetic = options.antithetic ?? true;
  if (!(Number.isInteger(options.permutations) && options.permutations >= 1)) {
    throw new RangeError(`permutations must be a positive integer, got ${options.permutations}`);
  }
  const total = antithetic ? 2 * Math.ceil(options.permutations / 2) : options.permutations;
  // Independent draws: an antithetic pair is one draw (its two halves are correlated by design).
  const permutationsPerDraw = antithetic ? 2 : 1;
  const numDraws = total / permutationsPerDraw;
  const rng = new SeededRandom(options.seed ?? 0);
  const sums = new Float64Array(numPlayers);
  const squares = new Float64Array(numPlayers);
  const draw = new Float64Array(numPlayers);
  const valueOfNone = await value([]);
  let valueOfAll = valueOfNone;
  let previousOrder: number[] = [];
  for (let p = 0; p < total; p++) {
    throwIfAborted(options.signal);
    const isSecondHalf = antithetic && p % 2 === 1;
    const order = isSecondHalf ? [...previousOrder].reverse() : shuffledPlayers(numPlayers, rng);
    previousOrder = order;
    if (!isSecondHalf) draw.fill(0);
    const removed: number[] = [];
    let before = valueOfNone;
    for (const player of order) {
      removed.push(player);
      const after = await value([...removed].sort((a, b) => a - b));
      draw[player] += (after - before) / permutationsPerDraw;
      before = after;
    }
    valueOfAll = before;
    if (p % permutationsPerDraw === permutationsPerDraw - 1) {
      for (let i = 0; i < numPlayers; i++) {
        sums[i] += draw[i]!;
        squares[i] += draw[i]! * draw[i]!;
      }
    }
    options.onPermutation?.(p + 1, total);
  }
  const values = Array.from(sums, (s) => s / numDraws);
  const standardErrors = values.map((mean, i) => {
    if (numDraws < 2) return Number.NaN;
    const variance = Math.max(0, (squares[i]! - numDraws * mean * mean) / (numDraws - 1));
    return Math.sqrt(variance / numDraws);
  });
  return { values, standardErrors, valueOfNone, valueOfAll, permutations: total };
}

/** Fisher–Yates with the seeded generator, so a seed fixes the estimate. */
function shuffledPlayers(n: number, rng: SeededRandom): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}
