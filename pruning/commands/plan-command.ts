/** `prune plan`: choose sublayers to drop (and fit their emulation), write a plan file. */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { DropserveError } from '../../engine/errors.ts';
import type { DropSpec } from '../../engine/plan/plan.ts';
import type { EmulationChoice } from '../emulation-plan.ts';
import { describeEmulation, fitEmulation, parseEmulationChoice } from '../emulation-plan.ts';
import { buildPlan, emulationPathFor, writePlan } from '../plan-file.ts';
import type { Progress } from '../progress.ts';
import { checkDropCounts, METHOD_METRIC, parseMethod, selectSublayers } from '../select.ts';
import type { EmulationFitMode, SequentialFit } from '../sequential-emulation.ts';
import { EMULATION_FIT_MODES, fitEmulationSequentially } from '../sequential-emulation.ts';
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
      'emulate-fit': { type: 'string' },
      'validation-samples': { type: 'string' },
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
  // Fail on bad values before loading anything.
  const fitMode = parseFitMode(flags['emulate-fit'] as string | undefined);
  if (parseEmulationChoice(emulationText).kind === 'none') {
    for (const flag of ['emulate-fit', 'validation-samples']) {
      if (flags[flag] !== undefined) {
        throw new DropserveError(
          'DS_INVALID_ARGUMENT',
          `prune plan: --${flag} needs --emulate bias|lowrank[:R]`,
          {
            param: flag,
          },
        );
      }
    }
  }
  if (fitMode === 'full' && flags['validation-samples'] !== undefined) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      'prune plan: --validation-samples applies to --emulate-fit sequential (the full fit has no validation split)',
      { param: 'validation-samples' },
    );
  }
  const validationSamples =
    flags['validation-samples'] === undefined
      ? undefined
      : integerFlag(flags['validation-samples'] as string, 'validation-samples', 1, 1);
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
    let sequential: SequentialFit | undefined;
    if (emulationChoice.kind !== 'none') {
      const onProgress = (done: number, total: number) => progress.update(done, total);
      if (fitMode === 'sequential') {
        if (validationSamples !== undefined && validationSamples >= workspace.samples.length) {
          throw new DropserveError(
            'DS_INVALID_ARGUMENT',
            `--validation-samples ${validationSamples}: must be below the ${workspace.samples.length} calibration samples, so some are left to fit on`,
            { param: 'validation-samples' },
          );
        }
        if (workspace.samples.length < 2) {
          throw new DropserveError(
            'DS_INVALID_ARGUMENT',
            'prune plan: the sequential emulation fit needs at least 2 calibration samples (fit + validation); give more --samples or --emulate-fit full',
            { param: 'samples' },
          );
        }
        progress.phase(`fit ${describeEmulation(emulationChoice)} (sequential)`, 1);
        sequential = await fitEmulationSequentially(
          workspace.session,
          weights,
          workspace.samples,
          spec,
          emulationChoice,
          { validationSamples, signal, onProgress },
        );
        const keptAny = sequential.decisions.some((d) => d.kept);
        if (keptAny) {
          spec = { ...spec, emulation: sequential.emulation };
          emulationFile = sequential.file;
        }
        explainedVariance =
          emulationChoice.kind === 'lowrank' && keptAny ? sequential.explainedVariance : undefined;
      } else {
        progress.phase(`fit ${describeEmulation(emulationChoice)} (full)`, workspace.samples.length);
        const fitted = await fitEmulation(
          workspace.session,
          weights,
          workspace.samples,
          spec,
          emulationChoice,
          {
            signal,
            onProgress,
          },
        );
        spec = { ...spec, emulation: fitted.emulation };
        emulationFile = fitted.file;
        explainedVariance = emulationChoice.kind === 'lowrank' ? fitted.explainedVariance : undefined;
      }
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
          ...(emulationChoice.kind !== 'none'
            ? {
                emulation: describeEmulation(emulationChoice),
                emulation_fit: sequential ? sequentialRecord(sequential, emulationChoice) : { mode: 'full' },
              }
            : {}),
          ...(explainedVariance ? { explained_variance: explainedVariance } : {}),
        },
      },
      emulationFile === undefined || emulationChoice.kind === 'none'
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
      ...(plan.provenance!.emulation_fit ? { emulation_fit: plan.provenance!.emulation_fit } : {}),
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
      if (sequential) lines.push(...decisionLines(sequential, emulationChoice));
      lines.push(
        `calibration perplexity: full ${full.perplexity.toFixed(4)} → dropped ${dropped.perplexity.toFixed(4)}${
          emulated
            ? ` → with ${describeEmulation(emulationChoice)} emulation ${emulated.perplexity.toFixed(4)}`
            : sequential
              ? ' (the gate kept no emulation: plain drops)'
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

function parseFitMode(text: string | undefined): EmulationFitMode {
  const mode = text ?? 'sequential';
  if (!(EMULATION_FIT_MODES as readonly string[]).includes(mode)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--emulate-fit "${mode}": valid: ${EMULATION_FIT_MODES.join(', ')} (sequential: fitted inside the pruned network, gated on validation; full: on full-model activations)`,
      { param: 'emulate-fit' },
    );
  }
  return mode as EmulationFitMode;
}

/** What the plan file records of a sequential fit: per sublayer, the gate's decision and its figures. */
function sequentialRecord(fit: SequentialFit, choice: EmulationChoice): Record<string, unknown> {
  return {
    mode: 'sequential',
    target: fit.target === 'block' ? 'sublayer update on pruned-network inputs' : 'full-model stream',
    fit_samples: fit.fitSamples,
    validation_samples: fit.validationSamples,
    refit: fit.refit
      ? `kept emulations refit on all ${fit.fitSamples + fit.validationSamples} samples with the chosen ridge`
      : false,
    ridge_grid: fit.ridgeGrid,
    validation_nll: fit.validationNll,
    sublayers: fit.decisions.map((d) => ({
      sublayer: sublayerName(d.sublayer),
      kept: d.kept,
      emulation: d.kept ? describeEmulation(choice) : 'plain',
      ridge: d.ridge,
      validation_nll_plain: d.validationNllPlain,
      validation_nll_emulated: d.validationNllEmulated,
      fit_tokens: d.fitTokens,
      candidates: d.candidates.map((c) => ({
        ridge: c.ridge,
        validation_nll: c.validationNll,
        ...(c.explainedVariance !== undefined ? { explained_variance: c.explainedVariance } : {}),
      })),
    })),
  };
}

function decisionLines(fit: SequentialFit, choice: EmulationChoice): string[] {
  const lines = [
    `${describeEmulation(choice)} fitted sequentially on ${fit.fitSamples} samples, gated on ${fit.validationSamples} validation samples${fit.refit ? ', kept ones refit on all' : ''} (validation NLL full ${fit.validationNll.full.toFixed(4)}):`,
  ];
  for (const d of fit.decisions) {
    const figures = `validation NLL plain ${d.validationNllPlain.toFixed(4)}, emulated ${d.validationNllEmulated.toFixed(4)} (ridge ${d.ridge})`;
    lines.push(
      `  ${sublayerName(d.sublayer).padEnd(7)} ${d.kept ? `keep ${describeEmulation(choice)}` : 'plain drop'}: ${figures}`,
    );
  }
  return lines;
}
