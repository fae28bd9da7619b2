import { createHash } from 'node:crypto';
import { DropserveError } from '../../engine/errors.ts';

export interface ExperimentArm {
  variant: string;
  weight: number;
}

export interface Experiment {
  name: string;
  arms: ExperimentArm[];
}

/**
 * A/B experiments: a routable model name whose requests are split between variants by weight.
 * With an OpenAI `user`, the assignment is a hash of (experiment, user), so a user sticks to one
 * variant on every replica without shared state; without one it is random. Weights change
 * atomically: the arms array is replaced whole, never edited in place.
 */
export class ExperimentRouter {
  readonly #experiments = new Map<string, Experiment>();
  readonly #isKnownVariant: (variant: string) => boolean;
  readonly #random: () => number;
  readonly #onAssign: ((experiment: string, variant: string) => void) | undefined;

  /** `onAssign` hears every assignment (metrics), whichever transport asked. */
  constructor(
    isKnownVariant: (variant: string) => boolean,
    random: () => number = Math.random,
    onAssign?: (experiment: string, variant: string) => void,
  ) {
    this.#isKnownVariant = isKnownVariant;
    this.#random = random;
    this.#onAssign = onAssign;
  }

  has(name: string): boolean {
    return this.#experiments.has(name);
  }

  list(): Experiment[] {
    return [...this.#experiments.values()];
  }

  get(name: string): Experiment | undefined {
    return this.#experiments.get(name);
  }

  /** Creates or replaces an experiment after validating every arm. */
  set(name: string, arms: ExperimentArm[]): Experiment {
    if (name.trim() === '') throw new DropserveError('DS_INVALID_ARGUMENT', 'experiment name is empty');
    if (this.#isKnownVariant(name)) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `experiment name "${name}" is already a variant name`);
    }
    if (arms.length === 0)
      throw new DropserveError('DS_INVALID_ARGUMENT', `experiment "${name}" has no arms`);
    for (const arm of arms) {
      if (!this.#isKnownVariant(arm.variant)) {
        throw new DropserveError(
          'DS_NOT_FOUND',
          `experiment "${name}": variant "${arm.variant}" is not served`,
        );
      }
      if (!Number.isFinite(arm.weight) || arm.weight < 0) {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `experiment "${name}": weight of ${arm.variant} must be ≥ 0, got ${arm.weight}`,
        );
      }
    }
    if (new Set(arms.map((a) => a.variant)).size !== arms.length) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `experiment "${name}": a variant appears twice`);
    }
    if (arms.reduce((s, a) => s + a.weight, 0) <= 0) {
      throw new DropserveError('DS_INVALID_ARGUMENT', `experiment "${name}": weights sum to 0`);
    }
    const experiment: Experiment = { name, arms: arms.map((a) => ({ ...a })) };
    this.#experiments.set(name, experiment);
    return experiment;
  }

  /** Removes an experiment; false when there was none. Requests already assigned are unaffected. */
  delete(name: string): boolean {
    return this.#experiments.delete(name);
  }

  /** The variant that serves this request of the experiment. */
  assign(name: string, user?: string): string {
    const experiment = this.#experiments.get(name);
    if (!experiment) throw new DropserveError('DS_NOT_FOUND', `no experiment "${name}"`);
    const total = experiment.arms.reduce((s, a) => s + a.weight, 0);
    const u = user ? hashToUnit(`${name}\u0000${user}`) : this.#random();
    let point = u * total;
    let chosen = experiment.arms.findLast((a) => a.weight > 0)!.variant;
    for (const arm of experiment.arms) {
      point -= arm.weight;
      if (point < 0) {
        chosen = arm.variant;
        break;
      }
    }
    this.#onAssign?.(name, chosen);
    return chosen;
  }
}

/** Uniform in [0, 1) from a string: the first 48 bits of its SHA-256. */
export function hashToUnit(text: string): number {
  const digest = createHash('sha256').update(text).digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

/**
 * `--experiment NAME=VARIANT:WEIGHT,VARIANT:WEIGHT…`. Variant names may contain ':' themselves
 * ("stories260K:attn-2"), so the weight is what follows the last ':'.
 */
export function parseExperimentFlag(text: string): { name: string; arms: ExperimentArm[] } {
  const eq = text.indexOf('=');
  if (eq <= 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--experiment "${text}": expected NAME=VARIANT:WEIGHT,VARIANT:WEIGHT`,
    );
  }
  const name = text.slice(0, eq).trim();
  const arms = text
    .slice(eq + 1)
    .split(',')
    .map((part) => {
      const colon = part.lastIndexOf(':');
      const weight = Number(part.slice(colon + 1));
      if (colon <= 0 || part.slice(colon + 1).trim() === '' || !Number.isFinite(weight)) {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `--experiment "${text}": "${part}" is not VARIANT:WEIGHT`,
        );
      }
      return { variant: part.slice(0, colon).trim(), weight };
    });
  return { name, arms };
}
