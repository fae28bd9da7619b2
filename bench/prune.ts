/**
 * `dropserve bench prune` (npm run bench:prune): how long `prune analyze` takes per metric on
 * stories260K, against the cosine metric as the baseline, and how many calibration evaluations
 * (one evaluation = the calibration loss of one drop set over all samples) each second buys.
 * The session is created and warmed up once, outside the timings; every metric starts with an
 * empty evaluation memo.
 */
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { DropserveError } from '../engine/errors.ts';
import type { MetricName } from '../pruning/analyze.ts';
import { analyzeSublayers, METRICS } from '../pruning/analyze.ts';
import { CalibrationLoss } from '../pruning/calibration-loss.ts';
import { residualPass } from '../pruning/residual-stats.ts';
import { openWorkspace } from '../pruning/workspace.ts';
import { STORIES260K } from './common.ts';

const DEFAULT_DATA = '../shared/data/tinystories-eval.txt';

interface MetricTiming {
  metric: MetricName;
  seconds: number;
  evaluations: number;
}

export async function runPruneBench(argv: string[]): Promise<number> {
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: {
        model: { type: 'string', default: STORIES260K },
        data: { type: 'string', default: DEFAULT_DATA },
        samples: { type: 'string', default: '16' },
        'seq-len': { type: 'string', default: '128' },
        permutations: { type: 'string', default: '4' },
        repeats: { type: 'string', default: '3' },
      },
      strict: true,
    }).values as Record<string, string | undefined>;
  } catch (e) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `bench prune: ${(e as Error).message}`);
  }
  const samples = Number(values.samples);
  const seqLen = Number(values['seq-len']);
  const permutations = Number(values.permutations);
  const repeats = Number(values.repeats);
  const workspace = await openWorkspace({
    model: values.model,
    data: values.data!,
    samples,
    seqLen,
    hiddenStates: true,
  });
  try {
    const { model, session } = workspace;
    // Warm-up: the first runs of a session pay for allocations; keep them out of every timing.
    await new CalibrationLoss(session, workspace.samples).evaluate({ dropAttention: [], dropMlp: [] });
    await residualPass(session, model.weights, workspace.samples);

    const timings: MetricTiming[] = [];
    for (const metric of METRICS) {
      // Median of `repeats` runs: the machine is shared, single runs are noisy.
      const runs: MetricTiming[] = [];
      for (let r = 0; r < repeats; r++) {
        const loss = new CalibrationLoss(session, workspace.samples);
        const started = performance.now();
        const analysis = await analyzeSublayers({ loss, weights: model.weights }, metric, {
          permutations,
          seed: 0,
        });
        runs.push({
          metric,
          seconds: (performance.now() - started) / 1000,
          evaluations: analysis.evaluations,
        });
      }
      timings.push(runs.sort((a, b) => a.seconds - b.seconds)[Math.floor(runs.length / 2)]!);
    }
    // Raw evaluation rate: single-sublayer drops, memo bypassed by a fresh loss each time.
    const rateLoss = new CalibrationLoss(session, workspace.samples);
    const rateStarted = performance.now();
    for (let l = 0; l < model.config.numLayers; l++)
      await rateLoss.evaluate({ dropAttention: [l], dropMlp: [] });
    const evaluationsPerSecond = model.config.numLayers / ((performance.now() - rateStarted) / 1000);

    const baseline = timings[0]!;
    // Loss-based metrics remove many sublayers at once (Shapley), which makes their runs cheaper.
    const lines = [
      `bench prune — commit ${commitOf()} — ${model.source.description}`,
      `calibration: ${workspace.corpus.path}, ${workspace.samples.length} samples of ≤ ${workspace.seqLen} tokens (${workspace.loss.numTokens} scored tokens); shapley: ${permutations} permutations; 1 ORT thread; median of ${repeats} runs`,
      `evaluations per second (one = calibration loss of one drop set): ${evaluationsPerSecond.toFixed(2)}`,
      '',
      `${'metric'.padEnd(10)}${'time'.padStart(10)}${'evaluations'.padStart(13)}${'evals/s'.padStart(10)}${'time / cosine'.padStart(15)}`,
      ...timings.map((t) => {
        const rate = t.evaluations > 0 ? (t.evaluations / t.seconds).toFixed(2) : '—';
        const ratio = `${(t.seconds / baseline.seconds).toFixed(2)}×`;
        return `${t.metric.padEnd(10)}${`${t.seconds.toFixed(3)} s`.padStart(10)}${String(t.evaluations).padStart(13)}${rate.padStart(10)}${ratio.padStart(15)}`;
      }),
    ];
    console.log(lines.join('\n'));
    return 0;
  } finally {
    await workspace.close();
  }
}

function commitOf(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return 'unknown';
  }
}
