import type { Interval } from './statistics.ts';

export type Verdict = 'better' | 'worse' | 'no detectable difference yet';

/** Which way is good: lower latency and divergence, higher throughput and agreement. */
export type Direction = 'lower-is-better' | 'higher-is-better';

/**
 * No verdict before this many observations in each arm: the confidence sequence plugs in the sample
 * variance, which is itself noisy for the first handful of requests (a burn-in, as GrowthBook and
 * Statsig use, keeps that noise from deciding anything).
 */
export const MIN_SAMPLES_FOR_VERDICT = 20;

/**
 * The verdict of a confidence sequence on arm-versus-control: "better"/"worse" once the whole
 * sequence lies on one side of `noEffect` (1 for a ratio, 0 for a difference), otherwise undecided.
 */
export function verdictOf(
  sequence: Interval | null,
  noEffect: number,
  direction: Direction,
  samplesPerArm: number,
): Verdict {
  if (sequence === null || samplesPerArm < MIN_SAMPLES_FOR_VERDICT) return 'no detectable difference yet';
  const above = sequence.low > noEffect;
  const below = sequence.high < noEffect;
  if (!above && !below) return 'no detectable difference yet';
  const armIsHigher = above;
  return armIsHigher === (direction === 'higher-is-better') ? 'better' : 'worse';
}
