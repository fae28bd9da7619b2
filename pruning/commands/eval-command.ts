/** `prune eval`: perplexity of a variant over a text file, and multiple-choice tasks. */
import { DropserveError } from '../../engine/errors.ts';
import { kvBytesPerToken } from '../../engine/graph/kv-bytes.ts';
import { ModelSession } from '../../engine/graph/model-session.ts';
import { loadModel } from '../../engine/model/load-model.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import { withBuiltInPlan } from '../../engine/plan/built-in-plan.ts';
import type { DropSpec } from '../../engine/plan/plan.ts';
import { loadPlanFile, maskOf, validateDropSpec } from '../../engine/plan/plan.ts';
import { weightBytesPerToken, weightByteTable } from '../../engine/quant/weight-bytes.ts';
import { parseWeightFlags, WEIGHT_FLAG_SPECS, withWeightOptions } from '../../engine/quant/weight-flags.ts';
import { readCorpus } from '../corpus.ts';
import type { PerplexityReport } from '../perplexity.ts';
import { corpusPerplexity } from '../perplexity.ts';
import type { Progress } from '../progress.ts';
import type { TaskResults } from '../tasks.ts';
import { evaluateTasks, readTasks } from '../tasks.ts';
import { runAdaptiveEval } from './adaptive-eval-command.ts';
import type { PruneIo } from './flags.ts';
import { COMMON_OPTIONS, integerFlag, layerListFlag, modelInfo, parseFlags, requireFlag } from './flags.ts';

export async function runEvalCommand(
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
      adaptive: { type: 'string' },
      'prompt-tokens': { type: 'string' },
      ...WEIGHT_FLAG_SPECS,
    },
    'eval',
  );
  const weightOptions = parseWeightFlags(flags as Parameters<typeof parseWeightFlags>[0]);
  const planPath = flags.plan as string | undefined;
  if (planPath && (flags['drop-attention'] !== undefined || flags['drop-mlp'] !== undefined)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      'prune eval: give --plan or --drop-attention/--drop-mlp, not both',
    );
  }
  const corpus = readCorpus(requireFlag(flags.data as string | undefined, 'data', 'eval'));
  if (flags.adaptive === undefined && flags['prompt-tokens'] !== undefined) {
    throw new DropserveError('DS_INVALID_ARGUMENT', 'prune eval: --prompt-tokens needs --adaptive');
  }
  const tasks = flags.tasks && flags.adaptive === undefined ? readTasks(flags.tasks as string) : undefined;
  const slice = {
    skipDocs: integerFlag(flags['skip-docs'] as string | undefined, 'skip-docs', 0),
    maxDocs:
      flags['max-docs'] === undefined
        ? undefined
        : integerFlag(flags['max-docs'] as string, 'max-docs', 1, 1),
  };
  const model = withWeightOptions(
    await loadModel({
      model: flags.model as string | undefined,
      tokenizer: flags.tokenizer as string | undefined,
      onProgress: (m) => io.stderr(`${m}\n`),
    }),
    weightOptions,
  );
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
  if (flags.adaptive !== undefined) {
    const isStaticGiven =
      planPath !== undefined || flags['drop-attention'] !== undefined || flags['drop-mlp'] !== undefined;
    return runAdaptiveEval(
      { flags, model, corpus, slice, ...(isStaticGiven ? { staticPlan: spec } : {}) },
      io,
      progress,
      signal,
    );
  }
  // An export (deci / gguf) carries its own plan: its sublayers have no weights to evaluate.
  spec = withBuiltInPlan(spec, model.builtInPlan);
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
    const outcome: EvalOutcome = {
      model,
      data: corpus.path,
      spec,
      variant,
      report,
      tasks: taskResults,
      seconds,
    };
    io.stdout(flags.json ? `${JSON.stringify(evalJson(outcome), null, 2)}\n` : evalTable(outcome));
    return 0;
  } finally {
    await session.release();
  }
}

/** What one `prune eval` run measured: the single input of both output formats. */
interface EvalOutcome {
  model: LoadedModel;
  /** Path of the text file scored. */
  data: string;
  spec: DropSpec;
  variant: string;
  report: PerplexityReport;
  tasks: TaskResults | undefined;
  seconds: number;
}

function evalJson({
  model,
  data,
  spec,
  variant,
  report,
  tasks,
  seconds,
}: EvalOutcome): Record<string, unknown> {
  return {
    model: modelInfo(model),
    variant,
    drop_attention: spec.dropAttention,
    drop_mlp: spec.dropMlp,
    weights: model.weights.format ?? 'fp32',
    weight_bytes_per_token: weightBytesPerToken(weightByteTable(model.config, model.weights), spec),
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

function evalTable({ model, data, spec, variant, report, tasks, seconds }: EvalOutcome): string {
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
      'weights',
      `${model.weights.format ?? 'fp32'}: ${weightBytesPerToken(weightByteTable(model.config, model.weights), spec)} bytes/token`,
    ),
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
