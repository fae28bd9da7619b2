import { createHash } from 'node:crypto';
import { DropserveError } from '../../engine/errors.ts';
import type { Guardrail } from './guardrails.ts';

export interface ExperimentArm {
  variant: string;
  weight: number;
}

/**
 * Where an experiment comes from: "replica" = this process alone (--experiment, the admin API), so
 * other replicas may differ; "file" = an --experiments-file every replica mounts.
 */
export type ExperimentScope = 'replica' | 'file';

export interface Experiment {
  name: string;
  arms: ExperimentArm[];
  /** The arm the others are compared with (see controlOf). */
  control?: string;
  scope: ExperimentScope;
  /** This experiment's own guardrails (--experiments-file), checked besides the server-wide ones. */
  guardrails?: Guardrail[];
}

export interface ExperimentOptions {
  /** The arm the others are compared with (default: the full model when it is an arm, else the first). */
  control?: string;
  scope?: ExperimentScope;
  guardrails?: Guardrail[];
}

/** Why an arm gets no new traffic: its guardrail tripped (server/experiments/guardrails.ts). */
export interface DrainedArm {
  variant: string;
  reason: string;
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
  readonly #fullModel: () => string | undefined;
  /** experiment → arms that take no new traffic; survives weight changes, dropped with the experiment. */
  readonly #drained = new Map<string, Map<string, DrainedArm>>();

  /**
   * `onAssign` hears every assignment (metrics), whichever transport asked. `fullModel` names the
   * unpruned variant, the default control.
   */
  constructor(
    isKnownVariant: (variant: string) => boolean,
    random: () => number = Math.random,
    onAssign?: (experiment: string, variant: string) => void,
    fullModel: () => string | undefined = () => undefined,
  ) {
    this.#isKnownVariant = isKnownVariant;
    this.#random = random;
    this.#onAssign = onAssign;
    this.#fullModel = fullModel;
  }

  /** The name of the unpruned variant, when known. */
  fullModel(): string | undefined {
    return this.#fullModel();
  }

  /** The control arm: the one named at creation, else the full model when it is an arm, else the first. */
  controlOf(experiment: Experiment): string {
    if (experiment.control !== undefined) return experiment.control;
    const full = this.#fullModel();
    if (full !== undefined && experiment.arms.some((a) => a.variant === full)) return full;
    return experiment.arms[0]!.variant;
  }

  /**
   * Stops new traffic to an arm (a guardrail tripped): its users go to the control arm from now on;
   * requests already running finish where they are. The control arm itself is never drained.
   */
  drain(name: string, variant: string, reason: string): boolean {
    const experiment = this.#experiments.get(name);
    if (!experiment || variant === this.controlOf(experiment)) return false;
    const drained = this.#drained.get(name) ?? new Map<string, DrainedArm>();
    if (drained.has(variant)) return false;
    drained.set(variant, { variant, reason });
    this.#drained.set(name, drained);
    return true;
  }

  drained(name: string): DrainedArm[] {
    return [...(this.#drained.get(name)?.values() ?? [])];
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
  set(name: string, arms: ExperimentArm[], options: ExperimentOptions = {}): Experiment {
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
    if (options.control !== undefined && !arms.some((a) => a.variant === options.control)) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `experiment "${name}": control "${options.control}" is not one of its arms`,
      );
    }
    const experiment: Experiment = {
      name,
      arms: arms.map((a) => ({ ...a })),
      ...(options.control === undefined ? {} : { control: options.control }),
      scope: options.scope ?? 'replica',
      ...(options.guardrails?.length ? { guardrails: [...options.guardrails] } : {}),
    };
    this.#experiments.set(name, experiment);
    // A drained arm that is no longer an arm, or is now the control, is forgotten.
    const drained = this.#drained.get(name);
    for (const variant of drained?.keys() ?? []) {
      if (!arms.some((a) => a.variant === variant) || variant === this.controlOf(experiment)) {
        drained!.delete(variant);
      }
    }
    return experiment;
  }

  /** Removes an experiment; false when there was none. Requests already assigned are unaffected. */
  delete(name: string): boolean {
    this.#drained.delete(name);
    return this.#experiments.delete(name);
  }

  /**
   * The variant that serves this request of the experiment. The split is computed as if no arm were
   * drained, and a drained arm's share goes to the control: every other user keeps their arm.
   */
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
    if (this.#drained.get(name)?.has(chosen)) chosen = this.controlOf(experiment);
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
 * `--experiment NAME=VARIANT:WEIGHT,VARIANT:WEIGHT…[,control=VARIANT]`. Variant names may contain
 * ':' themselves ("stories260K:attn-2"), so the weight is what follows the last ':'.
 */
export function parseExperimentFlag(text: string): {
  name: string;
  arms: ExperimentArm[];
  control?: string;
} {
  const eq = text.indexOf('=');
  if (eq <= 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--experiment "${text}": expected NAME=VARIANT:WEIGHT,VARIANT:WEIGHT`,
    );
  }
  const name = text.slice(0, eq).trim();
  const parts = text.slice(eq + 1).split(',');
  const controlParts = parts.filter((part) => part.trim().startsWith('control='));
  if (controlParts.length > 1) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--experiment "${text}": control= given twice`);
  }
  const control = controlParts[0]?.trim().slice('control='.length).trim();
  const arms = parts
    .filter((part) => !part.trim().startsWith('control='))
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
  return control === undefined ? { name, arms } : { name, arms, control };
}
