/** `prune plan`: choose sublayers to drop (and fit their emulation), write a plan file. */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { DropserveError } from '../../engine/errors.ts';
import type { DropSpec } from '../../engine/plan/plan.ts';
import { describeEmulation, fitEmulation, parseEmulationChoice } from '../emulation-plan.ts';
import { buildPlan, emulationPathFor, writePlan } from '../plan-file.ts';
import type { Progress } from '../progress.ts';
import { checkDropCounts, METHOD_METRIC, parseMethod, selectSublayers } from '../select.ts';
import { sublayerName } from '../sublayers.ts';
import { openWorkspace } from '../workspace.ts';
import type { PruneIo } from './flags.ts';
import {
  CALIBRATION_OPTIONS,
  COMMON_OPTIONS,
  calibrationWorkspaceOptions,
  integerFlag,
  parseFlags,
  requireFlag,
  shapleyFlags,
} from './flags.ts';

export async function runPlanCommand(
  argv: string[],
  io: PruneIo,
  progress: Progress,
  signal: AbortSignal,
): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      ...COMMON_OPTIONS,
      ...CALIBRATION_OPTIONS,
      'drop-attention': { type: 'string' },
      'drop-mlp': { type: 'string' },
      method: { type: 'string' },
      emulate: { type: 'string' },
      out: { type: 'string' },
    },
    'plan',
  );
  const method = parseMethod((flags.method as string | undefined) ?? 'cosine');
  const out = requireFlag(flags.out as string | undefined, 'out', 'plan');
  const data = requireFlag(flags.data as string | undefined, 'data', 'plan');
  const counts = {
    attention: integerFlag(flags['drop-attention'] as string | undefined, 'drop-attention', 0),
    mlp: integerFlag(flags['drop-mlp'] as string | undefined, 'drop-mlp', 0),
  };
  if (counts.attention + counts.mlp === 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      'prune plan: give --drop-attention K and/or --drop-mlp K (K ≥ 1)',
    );
  }
  // Fail before a long search, not after it.
  const outDir = dirname(resolve(out));
  if (!existsSync(outDir) || !statSync(outDir).isDirectory()) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--out ${out}: directory ${outDir} does not exist`, {
      param: 'out',
    });
  }
  const emulationText = (flags.emulate as string | undefined) ?? 'none';
  parseEmulationChoice(emulationText); // fail on a bad value before loading anything
  const { permutations, seed } = shapleyFlags(flags);
  const workspace = await openWorkspace(calibrationWorkspaceOptions(flags, data, io, signal));
  try {
    const { config, weights } = workspace.model;
    checkDropCounts(counts, config.numLayers);
    const emulationChoice = parseEmulationChoice(emulationText, config.dim);
    const context = {
      loss: workspace.loss,
      weights,
      signal,
      onProgress: (done: number, total: number) => progress.update(done, total),
    };
    progress.phase(`plan ${method}`, 1);
    const selection = await selectSublayers(context, method, counts, { permutations, seed });
    let spec: DropSpec = selection.spec;
    let emulationFile: Parameters<typeof writePlan>[2];
    let explainedVariance: Record<string, number> | undefined;
    if (emulationChoice.kind !== 'none') {
      progress.phase(`fit ${describeEmulation(emulationChoice)}`, workspace.samples.length);
      const fitted = await fitEmulation(
        workspace.session,
        weights,
        workspace.samples,
        spec,
        emulationChoice,
        {
          signal,
          onProgress: (done, total) => progress.update(done, total),
        },
      );
      spec = { ...spec, emulation: fitted.emulation };
      emulationFile = fitted.file;
      explainedVariance = emulationChoice.kind === 'lowrank' ? fitted.explainedVariance : undefined;
    }
    // The plan's own calibration numbers, so a reader sees what the choice costs on its data.
    progress.phase('calibration check', 3);
    const full = await workspace.loss.evaluate({ dropAttention: [], dropMlp: [] });
    const dropped = await workspace.loss.evaluate(selection.spec);
    const emulated = spec.emulation ? await workspace.loss.evaluate(spec) : undefined;
    progress.stop();
    const scores = Object.fromEntries(
      Object.entries(selection.scores).filter(([, v]) => v !== undefined),
    ) as Record<string, number[]>;
    const plan = buildPlan(
      workspace.model.source.id,
      config,
      spec,
      {
        method,
        metric: METHOD_METRIC[method],
        data: workspace.corpus.path,
        samples: workspace.samples.length,
        seqLen: workspace.seqLen,
        scores,
        extra: {
          ...(method === 'joint' ? { joint: 'attention and MLP cosine scores ranked together' } : {}),
          ...(selection.steps
            ? {
                search: selection.steps.map((s) => ({
                  removed: sublayerName(s.removed),
                  perplexity: s.perplexity,
                  candidates: s.candidates,
                })),
              }
            : {}),
          ...(method === 'shapley' ? { permutations, seed } : {}),
          evaluations: selection.evaluations,
          calibration_perplexity: {
            full: full.perplexity,
            dropped: dropped.perplexity,
            ...(emulated ? { emulated: emulated.perplexity } : {}),
          },
          ...(emulationChoice.kind !== 'none' ? { emulation: describeEmulation(emulationChoice) } : {}),
          ...(explainedVariance ? { explained_variance: explainedVariance } : {}),
        },
      },
      emulationChoice.kind === 'none'
        ? undefined
        : {
            file: basename(emulationPathFor(out)),
            kind: emulationChoice.kind,
            ...(emulationChoice.kind === 'lowrank' ? { rank: emulationChoice.rank } : {}),
          },
    );
    if (signal.aborted) throw new DropserveError('DS_CANCELLED', 'interrupted');
    const written = writePlan(out, plan, emulationFile);
    const summary = {
      plan: written.planPath,
      ...(written.emulationPath ? { emulation_file: written.emulationPath } : {}),
      method,
      drop_attention: plan.drop_attention,
      drop_mlp: plan.drop_mlp,
      calibration_perplexity: plan.provenance!.calibration_perplexity,
      evaluations: selection.evaluations,
    };
    if (flags.json) {
      io.stdout(`${JSON.stringify(summary, null, 2)}\n`);
    } else {
      const lines = [
        `${workspace.model.source.id}: ${method} (${METHOD_METRIC[method]}) on ${workspace.samples.length} samples of ≤ ${workspace.seqLen} tokens from ${workspace.corpus.path}`,
        `drop attention [${plan.drop_attention.join(', ')}]  mlp [${plan.drop_mlp.join(', ')}]`,
      ];
      for (const [kind, values] of Object.entries(scores)) {
        lines.push(
          `  ${kind} scores: ${values.map((v) => (Math.abs(v) >= 1 ? v.toFixed(4) : v.toFixed(6))).join('  ')}`,
        );
      }
      if (selection.steps) {
        for (const [i, step] of selection.steps.entries()) {
          lines.push(
            `  step ${i + 1}: remove ${sublayerName(step.removed)} → calibration ppl ${step.perplexity.toFixed(4)}`,
          );
        }
      }
      lines.push(
        `calibration perplexity: full ${full.perplexity.toFixed(4)} → dropped ${dropped.perplexity.toFixed(4)}${
          emulated
            ? ` → with ${describeEmulation(emulationChoice)} emulation ${emulated.perplexity.toFixed(4)}`
            : ''
        }`,
        `${selection.evaluations} evaluations for the search`,
        `wrote ${written.planPath}${written.emulationPath ? ` and ${written.emulationPath}` : ''}`,
      );
      io.stdout(`${lines.join('\n')}\n`);
    }
    return 0;
  } finally {
    await workspace.close();
  }
}
