import { addObservation, emptyMoments, ratioOfMeans } from './statistics.ts';
import { verdictOf } from './verdict.ts';

/**
 * Seeded simulations with known answers for the experiment statistics (statistics.test.ts asserts
 * on them; `npx tsx server/experiments/simulation.ts` prints the figures in docs/experiments.md).
 * TTFT-like observations: log-normal, σ = 0.5 on the log scale, the arm's mean `scale` × control's.
 */

/** mulberry32: a small seeded PRNG, so every run gives the same numbers. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function normal(random: () => number): number {
  const u = 1 - random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

export const ttftSample = (random: () => number, scale: number): number =>
  40 * scale * Math.exp(0.5 * normal(random));

export const SIMULATION_TAU = 0.05;

/** Share of `runs` seeded runs whose fixed 95% ratio interval covers the true ratio `scale`. */
export function ratioCoverage(runs: number, perArm: number, scale: number, firstSeed: number): number {
  let covered = 0;
  for (let seed = firstSeed; seed < firstSeed + runs; seed++) {
    const random = seeded(seed);
    const control = emptyMoments();
    const arm = emptyMoments();
    for (let i = 0; i < perArm; i++) {
      addObservation(control, ttftSample(random, 1));
      addObservation(arm, ttftSample(random, scale));
    }
    const ratio = ratioOfMeans(control, arm, SIMULATION_TAU)!;
    if (ratio.fixed.low <= scale && scale <= ratio.fixed.high) covered++;
  }
  return covered / runs;
}

/**
 * Feeds both arms one observation at a time (control, arm, control, …) and checks the sequential
 * verdict after every single one; the first decision and the observations it took.
 */
export function firstDecision(seed: number, scale: number, perArm: number): { verdict: string; atN: number } {
  const random = seeded(seed);
  const control = emptyMoments();
  const arm = emptyMoments();
  for (let i = 0; i < perArm; i++) {
    for (const [m, s] of [
      [control, 1],
      [arm, scale],
    ] as const) {
      addObservation(m, ttftSample(random, s));
      const ratio = ratioOfMeans(control, arm, SIMULATION_TAU);
      const verdict = verdictOf(ratio?.sequential ?? null, 1, 'lower-is-better', Math.min(control.n, arm.n));
      if (verdict !== 'no detectable difference yet') return { verdict, atN: control.n + arm.n };
    }
  }
  return { verdict: 'no detectable difference yet', atN: 2 * perArm };
}

export function decisions(
  runs: number,
  scale: number,
  perArm: number,
  firstSeed: number,
): { better: number; worse: number; undecided: number; medianAtN: number | null } {
  const out = { better: 0, worse: 0, undecided: 0 };
  const decidedAt: number[] = [];
  for (let seed = firstSeed; seed < firstSeed + runs; seed++) {
    const { verdict, atN } = firstDecision(seed, scale, perArm);
    if (verdict === 'better') out.better++;
    else if (verdict === 'worse') out.worse++;
    else out.undecided++;
    if (verdict !== 'no detectable difference yet') decidedAt.push(atN);
  }
  decidedAt.sort((a, b) => a - b);
  return { ...out, medianAtN: decidedAt.length ? decidedAt[Math.floor(decidedAt.length / 2)]! : null };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const runs = 200;
  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
  console.log(`coverage, 10% TTFT difference, 200/arm: ${pct(ratioCoverage(runs, 200, 1.1, 1))}`);
  console.log(`coverage, no difference, 150/arm:       ${pct(ratioCoverage(runs, 150, 1, 1001))}`);
  const none = decisions(runs, 1, 1000, 5001);
  console.log(
    `no difference, checked after every observation up to 1000/arm: better ${none.better}, worse ${none.worse} of ${runs} (false rate ${pct((none.better + none.worse) / runs)})`,
  );
  const slower = decisions(runs, 1.1, 2000, 9001);
  console.log(
    `10% slower arm, up to 2000/arm: worse ${slower.worse}, better ${slower.better}, undecided ${slower.undecided} of ${runs}; median observations to decide ${slower.medianAtN}`,
  );
}
