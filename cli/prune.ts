/**
 * `dropserve prune analyze | plan | eval`: thin flag parsing and printing around pruning/.
 *
 *   analyze  per-layer scores of attention and MLP sublayers under one metric
 *   plan     choose sublayers to drop (and fit their emulation), write a plan file
 *   eval     perplexity of a variant over a text file, and multiple-choice tasks
 */

import { existsSync, statSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { parseArgs } from 'node:util';
import { DropserveError } from '../engine/errors.ts';
import { kvBytesPerToken } from '../engine/graph/kv-bytes.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import type { DropSpec } from '../engine/plan/plan.ts';
import { loadPlanFile, maskOf, validateDropSpec } from '../engine/plan/plan.ts';
import type { Analysis } from '../pruning/analyze.ts';
import { analyzeSublayers, METRIC_DESCRIPTIONS, METRICS, parseMetric } from '../pruning/analyze.ts';
import { readCorpus } from '../pruning/corpus.ts';
import { describeEmulation, fitEmulation, parseEmulationChoice } from '../pruning/emulation-plan.ts';
import { withInterrupt } from '../pruning/interrupt.ts';
import type { PerplexityReport } from '../pruning/perplexity.ts';
import { corpusPerplexity } from '../pruning/perplexity.ts';
import { buildPlan, emulationPathFor, writePlan } from '../pruning/plan-file.ts';
import type { Progress } from '../pruning/progress.ts';
import { createProgress } from '../pruning/progress.ts';
import {
  checkDropCounts,
  METHOD_METRIC,
  METHODS,
  parseMethod,
  rankLowest,
  selectSublayers,
} from '../pruning/select.ts';
import { sublayerName, sublayersOf } from '../pruning/sublayers.ts';
import type { TaskResults } from '../pruning/tasks.ts';
import { evaluateTasks, readTasks } from '../pruning/tasks.ts';
import type { Workspace } from '../pruning/workspace.ts';
import { DEFAULT_SAMPLES, DEFAULT_SEQ_LEN, openWorkspace } from '../pruning/workspace.ts';

/** Where output goes; tests pass their own. */
export interface PruneIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Progress bars on stderr (default: when stderr is a terminal). */
  showProgress?: boolean;
}

const processIo: PruneIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

const EXIT_INTERRUPTED = 130;

const COMMON_FLAGS = `  --model M          llama2.c .bin, Hugging Face directory, or org/name in the local HF cache
                     (default: the built-in synthetic model)
  --tokenizer T      tokenizer file or directory (default: found beside the model)
  --data FILE        text; documents split on "<|endoftext|>" lines, else running text
  --threads N        onnxruntime intra-op threads (default 1)`;

const CALIBRATION_FLAGS = `  --samples N        calibration samples: the first N documents (or windows) (default ${DEFAULT_SAMPLES})
  --seq-len T        tokens per sample, BOS included, capped at the context (default ${DEFAULT_SEQ_LEN})
  --permutations P   Shapley: random removal orders walked, in antithetic pairs (default 16)
  --seed S           Shapley: permutation seed (default 0)`;

const USAGE = {
  analyze: `usage: dropserve prune analyze --data FILE [--model M] [--metric ${METRICS.join('|')}] [--json]
${COMMON_FLAGS}
${CALIBRATION_FLAGS}
  --metric NAME      ${METRICS.map((m) => `${m}: ${METRIC_DESCRIPTIONS[m]}`).join('\n                     ')}
                     Lower = more redundant for every metric. (default cosine)
  --json             print JSON instead of a table`,
  plan: `usage: dropserve prune plan --data FILE --drop-attention K [--drop-mlp K] --out plan.json [--model M]
${COMMON_FLAGS}
${CALIBRATION_FLAGS}
  --drop-attention K attention sublayers to drop (default 0)
  --drop-mlp K       MLP sublayers to drop (default 0)
  --method NAME      ${METHODS.join('|')} (default cosine). joint ranks attention and MLP cosine
                     scores together and drops the K_attn + K_mlp lowest of either kind
  --emulate E        none | bias | lowrank:R  (default none): fit a replacement for each dropped
                     sublayer on the calibration data, written to <out>.emulation.json
  --out FILE         plan file to write (atomically)
  --json             print a JSON summary`,
  eval: `usage: dropserve prune eval --data FILE [--model M] [--plan plan.json | --drop-attention 1,3 --drop-mlp 2]
${COMMON_FLAGS}
  --plan FILE        plan file (and its emulation side file)
  --drop-attention L comma-separated attention layers to drop (instead of --plan)
  --drop-mlp L       comma-separated MLP layers to drop
  --skip-docs N      skip the first N documents (or windows)
  --max-docs N       score at most N documents (or windows)
  --tasks FILE       multiple-choice tasks, JSONL lines {context, choices[], label}
  --json             print JSON`,
} as const;

type Subcommand = keyof typeof USAGE;

export async function runPruneCommand(argv: string[], io: PruneIo = processIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || !(sub in USAGE)) {
    const text = `usage: dropserve prune analyze|plan|eval [flags]   (dropserve prune <sub> --help)\n\n${USAGE.analyze}\n\n${USAGE.plan}\n\n${USAGE.eval}\n`;
    if (sub === undefined || sub === '--help' || sub === '-h') {
      io.stdout(text);
      return sub === undefined ? 2 : 0;
    }
    io.stderr(`dropserve prune: unknown subcommand "${sub}"; valid: analyze, plan, eval\n`);
    return 2;
  }
  const name = sub as Subcommand;
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout(`${USAGE[name]}\n`);
    return 0;
  }
  const progress = createProgress(io.showProgress);
  try {
    return await withInterrupt(async (signal) => {
      if (name === 'analyze') return await runAnalyze(rest, io, progress, signal);
      if (name === 'plan') return await runPlan(rest, io, progress, signal);
      return await runEval(rest, io, progress, signal);
    });
  } catch (e) {
    if (e instanceof DropserveError && e.code === 'DS_CANCELLED') {
      progress.stop();
      io.stderr('dropserve prune: interrupted; nothing was written\n');
      return EXIT_INTERRUPTED;
    }
    throw e;
  } finally {
    progress.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// flags

const COMMON_OPTIONS = {
  model: { type: 'string' },
  tokenizer: { type: 'string' },
  data: { type: 'string' },
  threads: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

const CALIBRATION_OPTIONS = {
  samples: { type: 'string' },
  'seq-len': { type: 'string' },
  permutations: { type: 'string' },
  seed: { type: 'string' },
} as const;

type FlagValues = Record<string, string | boolean | undefined>;

function parseFlags(
  argv: string[],
  options: NonNullable<ParseArgsConfig['options']>,
  sub: Subcommand,
): FlagValues {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (e) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `prune ${sub}: ${(e as Error).message} (see dropserve prune ${sub} --help)`,
    );
  }
}

function requireFlag(value: string | undefined, flag: string, sub: Subcommand): string {
  if (value === undefined || value === '') {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `prune ${sub}: --${flag} is required (see dropserve prune ${sub} --help)`,
      {
        param: flag,
      },
    );
  }
  return value;
}

function integerFlag(value: string | undefined, flag: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--${flag} must be an integer ≥ ${min}, got "${value}"`, {
      param: flag,
    });
  }
  return n;
}

function layerListFlag(value: string | undefined, flag: string): number[] {
  if (value === undefined || value.trim() === '' || value === 'none') return [];
  return value.split(',').map((part) => {
    const n = Number(part.trim());
    if (part.trim() === '' || !Number.isInteger(n) || n < 0) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--${flag}: "${part}" is not a layer index (expected e.g. 1,3)`,
        {
          param: flag,
        },
      );
    }
    return n;
  });
}

// ---------------------------------------------------------------------------------------------
// analyze

async function runAnalyze(
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
  const workspace = await openWorkspace({
    model: flags.model as string | undefined,
    tokenizer: flags.tokenizer as string | undefined,
    data: requireFlag(flags.data as string | undefined, 'data', 'analyze'),
    samples: integerFlag(flags.samples as string | undefined, 'samples', DEFAULT_SAMPLES, 1),
    seqLen: integerFlag(flags['seq-len'] as string | undefined, 'seq-len', DEFAULT_SEQ_LEN, 2),
    threads: integerFlag(flags.threads as string | undefined, 'threads', 1, 1),
    hiddenStates: true,
    signal,
    onMessage: (m) => io.stderr(`${m}\n`),
  });
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
      {
        permutations: integerFlag(flags.permutations as string | undefined, 'permutations', 16, 1),
        seed: integerFlag(flags.seed as string | undefined, 'seed', 0),
      },
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

// ---------------------------------------------------------------------------------------------
// plan

async function runPlan(
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
  const permutations = integerFlag(flags.permutations as string | undefined, 'permutations', 16, 1);
  const seed = integerFlag(flags.seed as string | undefined, 'seed', 0);
  const workspace = await openWorkspace({
    model: flags.model as string | undefined,
    tokenizer: flags.tokenizer as string | undefined,
    data,
    samples: integerFlag(flags.samples as string | undefined, 'samples', DEFAULT_SAMPLES, 1),
    seqLen: integerFlag(flags['seq-len'] as string | undefined, 'seq-len', DEFAULT_SEQ_LEN, 2),
    threads: integerFlag(flags.threads as string | undefined, 'threads', 1, 1),
    hiddenStates: true,
    signal,
    onMessage: (m) => io.stderr(`${m}\n`),
  });
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

// ---------------------------------------------------------------------------------------------
// eval

async function runEval(
  argv: string[],
  io: PruneIo,
  progress: Progress,
  signal: AbortSignal,
): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      ...COMMON_OPTIONS,
      plan: { type: 'string' },
      'drop-attention': { type: 'string' },
      'drop-mlp': { type: 'string' },
      tasks: { type: 'string' },
      'max-docs': { type: 'string' },
      'skip-docs': { type: 'string' },
    },
    'eval',
  );
  const planPath = flags.plan as string | undefined;
  if (planPath && (flags['drop-attention'] !== undefined || flags['drop-mlp'] !== undefined)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      'prune eval: give --plan or --drop-attention/--drop-mlp, not both',
    );
  }
  const corpus = readCorpus(requireFlag(flags.data as string | undefined, 'data', 'eval'));
  const tasks = flags.tasks ? readTasks(flags.tasks as string) : undefined;
  const slice = {
    skipDocs: integerFlag(flags['skip-docs'] as string | undefined, 'skip-docs', 0),
    maxDocs:
      flags['max-docs'] === undefined
        ? undefined
        : integerFlag(flags['max-docs'] as string, 'max-docs', 1, 1),
  };
  const model = await loadModel({
    model: flags.model as string | undefined,
    tokenizer: flags.tokenizer as string | undefined,
    onProgress: (m) => io.stderr(`${m}\n`),
  });
  const { config } = model;
  let spec: DropSpec;
  let variant: string;
  if (planPath) {
    const loaded = loadPlanFile(planPath, config);
    spec = loaded.spec;
    variant = `plan ${planPath}${loaded.plan.emulation ? ` (emulation: ${loaded.plan.emulation.kind}${loaded.plan.emulation.rank ? `:${loaded.plan.emulation.rank}` : ''})` : ''}`;
  } else {
    spec = {
      dropAttention: layerListFlag(flags['drop-attention'] as string | undefined, 'drop-attention'),
      dropMlp: layerListFlag(flags['drop-mlp'] as string | undefined, 'drop-mlp'),
    };
    validateDropSpec(spec, config.numLayers, 'prune eval');
    variant = spec.dropAttention.length + spec.dropMlp.length === 0 ? 'full model' : 'inline drop';
  }
  const mask = maskOf(spec, config.numLayers);
  const session = await ModelSession.create(config, model.weights, {
    threads: integerFlag(flags.threads as string | undefined, 'threads', 1, 1),
  });
  try {
    const started = performance.now();
    let done = 0;
    const report = await corpusPerplexity(session, model.tokenizer, corpus, mask, slice, {
      signal,
      onStart: (n) => progress.phase('perplexity', n),
      onProgress: (n) => progress.update((done += n)),
    });
    let taskResults: TaskResults | undefined;
    if (tasks) {
      let taskDone = 0;
      progress.phase(
        'tasks',
        tasks.reduce((n, t) => n + t.choices.length, 0),
      );
      taskResults = await evaluateTasks(session, model.tokenizer, tasks, mask, {
        signal,
        onProgress: (n) => progress.update((taskDone += n)),
      });
    }
    progress.stop();
    const seconds = (performance.now() - started) / 1000;
    if (flags.json) {
      io.stdout(
        `${JSON.stringify(evalJson(model, corpus.path, spec, variant, report, taskResults, seconds), null, 2)}\n`,
      );
    } else {
      io.stdout(evalTable(model, corpus.path, spec, variant, report, taskResults, seconds));
    }
    return 0;
  } finally {
    await session.release();
  }
}

function evalJson(
  model: LoadedModel,
  data: string,
  spec: DropSpec,
  variant: string,
  report: PerplexityReport,
  tasks: TaskResults | undefined,
  seconds: number,
): Record<string, unknown> {
  return {
    model: modelInfo(model),
    variant,
    drop_attention: spec.dropAttention,
    drop_mlp: spec.dropMlp,
    data,
    mode: report.mode,
    documents: report.numDocuments,
    context_length: report.contextLength,
    ...(report.stride !== undefined ? { stride: report.stride } : {}),
    tokens: report.numTokens,
    mean_nll: report.meanNll,
    perplexity: report.perplexity,
    kv_bytes_per_token: report.kvBytesPerToken,
    kv_bytes_per_token_full: kvBytesPerToken(model.config, []),
    ...(tasks ? { tasks: { count: tasks.numTasks, acc: tasks.accuracy, acc_norm: tasks.accuracyNorm } } : {}),
    seconds,
  };
}

function evalTable(
  model: LoadedModel,
  data: string,
  spec: DropSpec,
  variant: string,
  report: PerplexityReport,
  tasks: TaskResults | undefined,
  seconds: number,
): string {
  const row = (label: string, value: string) => `${label.padEnd(16)}${value}`;
  const full = kvBytesPerToken(model.config, []);
  const lines = [
    row('model', model.source.description),
    row(
      'variant',
      `${variant}: drop attention [${spec.dropAttention.join(', ')}], mlp [${spec.dropMlp.join(', ')}]`,
    ),
    row(
      'data',
      `${data}: ${report.mode === 'documents' ? `${report.numDocuments} documents, scored per document` : `${report.numDocuments} windows, stride ${report.stride}`} (context ${report.contextLength})`,
    ),
    row('tokens', report.numTokens.toLocaleString('en-US')),
    row('mean NLL', `${report.meanNll.toFixed(8)} nats`),
    row('perplexity', report.perplexity.toFixed(6)),
    row(
      'KV bytes/token',
      `${report.kvBytesPerToken} (full model ${full}, ${(report.kvBytesPerToken / full).toFixed(2)}×)`,
    ),
  ];
  if (tasks) {
    lines.push(
      row(
        'tasks',
        `${tasks.numTasks}: acc ${tasks.accuracy.toFixed(4)}, acc_norm ${tasks.accuracyNorm.toFixed(4)}`,
      ),
    );
  }
  lines.push(row('time', `${seconds.toFixed(1)} s`));
  return `${lines.join('\n')}\n`;
}

function modelInfo(model: LoadedModel): { id: string; path?: string; num_layers: number } {
  return {
    id: model.source.id,
    ...(model.source.path ? { path: model.source.path } : {}),
    num_layers: model.config.numLayers,
  };
}
