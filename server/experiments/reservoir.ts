/**
 * A uniform random sample of at most `capacity` values from a stream of any length (Vitter's
 * algorithm R): memory stays bounded however long an experiment runs. Used for display quantiles
 * only; means, intervals and verdicts come from exact running sums.
 */
export class Reservoir {
  readonly #values: number[] = [];
  readonly #capacity: number;
  readonly #random: () => number;
  #seen = 0;

  constructor(capacity: number, random: () => number = Math.random) {
    if (!(Number.isInteger(capacity) && capacity > 0))
      throw new RangeError(`capacity must be > 0, got ${capacity}`);
    this.#capacity = capacity;
    this.#random = random;
  }

  get seen(): number {
    return this.#seen;
  }

  get size(): number {
    return this.#values.length;
  }

  add(value: number): void {
    this.#seen++;
    if (this.#values.length < this.#capacity) {
      this.#values.push(value);
      return;
    }
    const slot = Math.floor(this.#random() * this.#seen);
    if (slot < this.#capacity) this.#values[slot] = value;
  }

  /** Linear interpolation between closest ranks; undefined when empty. */
  quantile(q: number): number | undefined {
    if (this.#values.length === 0) return undefined;
    const sorted = [...this.#values].sort((a, b) => a - b);
    const rank = q * (sorted.length - 1);
    const lo = Math.floor(rank);
    const hi = Math.min(sorted.length - 1, lo + 1);
    return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
  }
}
