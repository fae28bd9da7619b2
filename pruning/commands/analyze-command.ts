/** `prune analyze`: per-layer scores of attention and MLP sublayers under one metric. */
import type { Analysis } from '../analyze.ts';
import { analyzeSublayers, METRIC_DESCRIPTIONS, parseMetric } from '../analyze.ts';
import type { Progress } from '../progress.ts';
import { rankLowest } from '../select.ts';
import { sublayerName, sublayersOf } from '../sublayers.ts';
import type { Workspace } from '../workspace.ts';
import { openWorkspace } from '../workspace.ts';
import type { PruneIo } from './flags.ts';
import {
  CALIBRATION_OPTIONS,
  COMMON_OPTIONS,
  calibrationWorkspaceOptions,
  modelInfo,
  parseFlags,
  requireFlag,
  shapleyFlags,
} from './flags.ts';

export async function runAnalyzeCommand(
  argv: string[],
  io: PruneIo,
  progress: Progress,
  signal: AbortSignal,
): Promise<number> {
  const flags = parseFlags(
    argv,
    { ...COMMON_OPTIONS, ...CALIBRATION_OPTIONS, metric: { type: 'string' } },
    'analyze',
  );
  const metric = parseMetric((flags.metric as string | undefined) ?? 'cosine');
  const started = performance.now();
  const workspace = await openWorkspace(
    calibrationWorkspaceOptions(
      flags,
      requireFlag(flags.data as string | undefined, 'data', 'analyze'),
      io,
      signal,
    ),
  );
  try {
    progress.phase(`analyze ${metric}`, 1);
    const analysis = await analyzeSublayers(
      {
        loss: workspace.loss,
        weights: workspace.model.weights,
        signal,
        onProgress: (done, total) => progress.update(done, total),
      },
      metric,
      shapleyFlags(flags),
    );
    progress.stop();
    const seconds = (performance.now() - started) / 1000;
    const ranking = rankLowest(analysis.scores, sublayersOf(workspace.model.config.numLayers)).map(
      sublayerName,
    );
    if (flags.json) {
      io.stdout(
        `${JSON.stringify(
          {
            model: modelInfo(workspace.model),
            metric,
            description: METRIC_DESCRIPTIONS[metric],
            data: workspace.corpus.path,
            samples: workspace.samples.length,
            seq_len: workspace.seqLen,
            num_tokens: analysis.numTokens,
            scores: analysis.scores,
            ranking,
            ...(analysis.baseline
              ? {
                  baseline: { mean_nll: analysis.baseline.meanNll, perplexity: analysis.baseline.perplexity },
                }
              : {}),
            ...(analysis.shapley
              ? {
                  shapley: {
                    standard_errors: analysis.shapley.standardErrors,
                    value_of_all_removed: analysis.shapley.valueOfAll,
                    permutations: analysis.shapley.permutations,
                  },
                }
              : {}),
            evaluations: analysis.evaluations,
            seconds,
          },
          null,
          2,
        )}\n`,
      );
    } else {
      io.stdout(analysisTable(workspace, analysis, ranking, seconds));
    }
    return 0;
  } finally {
    await workspace.close();
  }
}

function analysisTable(workspace: Workspace, analysis: Analysis, ranking: string[], seconds: number): string {
  const { metric, scores } = analysis;
  const rank = new Map(ranking.map((name, i) => [name, i + 1]));
  const format = (value: number, name: string, error?: number): string => {
    const text = metric === 'ppl' ? value.toFixed(4) : value.toFixed(6);
    const withError = error !== undefined && Number.isFinite(error) ? `${text} ±${error.toFixed(4)}` : text;
    return `${withError} (#${rank.get(name)})`;
  };
  const lines = [
    `${workspace.model.source.id}: ${metric} = ${METRIC_DESCRIPTIONS[metric]}; lower = more redundant`,
    `calibration: ${workspace.corpus.path}, ${workspace.samples.length} samples of ≤ ${workspace.seqLen} tokens (${analysis.numTokens.toLocaleString('en-US')} ${
      analysis.evaluations > 0 ? 'scored tokens' : 'positions'
    })`,
  ];
  if (analysis.baseline) {
    lines.push(
      `full model: mean NLL ${analysis.baseline.meanNll.toFixed(6)}, perplexity ${analysis.baseline.perplexity.toFixed(4)}`,
    );
  }
  lines.push('', `${'layer'.padEnd(7)}${'attention'.padEnd(28)}mlp`);
  const errors = analysis.shapley?.standardErrors;
  scores.attention.forEach((_, l) => {
    const attn = format(scores.attention[l]!, `attn ${l}`, errors?.attention[l]);
    const mlp = format(scores.mlp[l]!, `mlp ${l}`, errors?.mlp[l]);
    lines.push(`${String(l).padEnd(7)}${attn.padEnd(28)}${mlp}`);
  });
  lines.push('', `ranking (most redundant first): ${ranking.join(', ')}`);
  if (analysis.shapley) {
    lines.push(
      `shapley: ${analysis.shapley.permutations} permutations; values sum to v(all removed) − v(none) = ${(
        analysis.shapley.valueOfAll - analysis.baseline!.meanNll
      ).toFixed(6)} nats`,
    );
  }
  lines.push(`${analysis.evaluations} calibration evaluations, ${seconds.toFixed(1)} s`);
  return `${lines.join('\n')}\n`;
}
