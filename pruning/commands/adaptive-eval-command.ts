/** `prune eval --adaptive attn:K[,mlp:M]`: adaptive against static dropping, continuation protocol. */
import { DropserveError } from '../../engine/errors.ts';
import { kvBytesPerToken } from '../../engine/graph/kv-bytes.ts';
import { ModelSession } from '../../engine/graph/model-session.ts';
import type { LoadedModel } from '../../engine/model/loaded-model.ts';
import { parseAdaptiveFlag } from '../../engine/plan/adaptive-flag.ts';
import type { AdaptiveSpec } from '../../engine/plan/adaptive-mask.ts';
import type { DropSpec } from '../../engine/plan/plan.ts';
import {
  type AdaptiveEvalReport,
  allStaticPlans,
  type ContinuationFidelity,
  countStaticPlans,
  DEFAULT_PROMPT_TOKENS,
  evaluateAdaptive,
  MAX_EXHAUSTIVE_PLANS,
} from '../adaptive-eval.ts';
import type { Corpus } from '../corpus.ts';
import type { Progress } from '../progress.ts';
import type { FlagValues, PruneIo } from './flags.ts';
import { integerFlag, modelInfo } from './flags.ts';

export interface AdaptiveEvalInput {
  flags: FlagValues;
  model: LoadedModel;
  corpus: Corpus;
  /** A static plan named with --plan or --drop-attention/--drop-mlp: the one to compare with. */
  staticPlan?: DropSpec;
  slice: { skipDocs: number; maxDocs?: number };
}

export async function runAdaptiveEval(
  input: AdaptiveEvalInput,
  io: PruneIo,
  progress: Progress,
  signal: AbortSignal,
): Promise<number> {
  const { flags, model, corpus } = input;
  const { config } = model;
  const adaptive = parseAdaptiveFlag(flags.adaptive as string, config.numLayers);
  if (flags.tasks !== undefined) {
    throw new DropserveError('DS_INVALID_ARGUMENT', 'prune eval: --tasks cannot be combined with --adaptive');
  }
  if (model.builtInPlan) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      'prune eval --adaptive needs the unpruned model: this export has a built-in plan',
    );
  }
  if (!corpus.documents) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `prune eval --adaptive: ${corpus.path} has no "<|endoftext|>" lines; the continuation protocol scores whole documents`,
      { param: 'data' },
    );
  }
  const promptTokens = integerFlag(
    flags['prompt-tokens'] as string | undefined,
    'prompt-tokens',
    DEFAULT_PROMPT_TOKENS,
    1,
  );
  let staticPlans: DropSpec[];
  let staticChoice: string;
  if (input.staticPlan) {
    staticPlans = [input.staticPlan];
    staticChoice = 'the plan given';
  } else {
    const count = countStaticPlans(adaptive, config.numLayers);
    if (count > MAX_EXHAUSTIVE_PLANS) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `prune eval --adaptive: ${count} static plans drop as many sublayers; name the one to compare with (--plan or --drop-attention/--drop-mlp)`,
      );
    }
    staticPlans = allStaticPlans(adaptive, config.numLayers);
    staticChoice = `best of all ${count} plans dropping as many, on these documents`;
  }
  const documents = corpus.documents.slice(
    input.slice.skipDocs,
    input.slice.maxDocs === undefined ? undefined : input.slice.skipDocs + input.slice.maxDocs,
  );
  if (documents.length === 0) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `prune eval: --skip-docs ${input.slice.skipDocs} leaves no document of ${corpus.documents.length}`,
      { param: 'skip-docs' },
    );
  }
  const session = await ModelSession.create(config, model.weights, {
    threads: integerFlag(flags.threads as string | undefined, 'threads', 1, 1),
    outputHiddenStates: true,
  });
  try {
    const started = performance.now();
    const report = await evaluateAdaptive(session, model.tokenizer, documents, {
      adaptive,
      promptTokens,
      staticPlans,
      signal,
      onStart: (n) => progress.phase('adaptive vs static', n),
      onProgress: (done) => progress.update(done),
    });
    progress.stop();
    const outcome: Outcome = {
      model,
      data: corpus.path,
      skipDocs: input.slice.skipDocs,
      report,
      staticChoice,
      seconds: (performance.now() - started) / 1000,
    };
    io.stdout(flags.json ? `${JSON.stringify(adaptiveJson(outcome), null, 2)}\n` : adaptiveTable(outcome));
    return 0;
  } finally {
    await session.release();
  }
}

interface Outcome {
  model: LoadedModel;
  data: string;
  skipDocs: number;
  report: AdaptiveEvalReport;
  staticChoice: string;
  seconds: number;
}

const specText = (s: AdaptiveSpec): string =>
  [s.attention > 0 ? `attn:${s.attention}` : '', s.mlp > 0 ? `mlp:${s.mlp}` : ''].filter(Boolean).join(',');

const dropsText = (d: DropSpec): string =>
  [
    d.dropAttention.length > 0 ? `attn ${d.dropAttention.join(',')}` : '',
    d.dropMlp.length > 0 ? `mlp ${d.dropMlp.join(',')}` : '',
  ]
    .filter(Boolean)
    .join(' · ') || 'none';

const fidelityJson = (f: ContinuationFidelity): Record<string, number> => ({
  positions: f.positions,
  delta_nll: f.deltaNll,
  nll: f.nll,
  perplexity: Math.exp(f.nll),
  agreement: f.agreement,
  kl: f.kl,
});

/** Which of adaptive and the best static plan has the lower ΔNLL, in words with the numbers. */
export function verdictOf(report: AdaptiveEvalReport): string {
  const best = report.static[0];
  if (!best) return 'no static plan to compare with';
  const a = report.adaptiveFidelity;
  const s = best.fidelity;
  const winner = a.deltaNll < s.deltaNll ? 'adaptive' : a.deltaNll > s.deltaNll ? 'static' : 'neither';
  const numbers = `ΔNLL ${a.deltaNll.toFixed(4)} vs ${s.deltaNll.toFixed(4)} nats, agreement ${(100 * a.agreement).toFixed(1)}% vs ${(100 * s.agreement).toFixed(1)}%, KL ${a.kl.toFixed(4)} vs ${s.kl.toFixed(4)}`;
  if (winner === 'neither') return `a tie: ${numbers}`;
  return `${winner} wins (adaptive ${specText(report.adaptive)} vs static ${dropsText(best.drops)}): ${numbers}`;
}

function adaptiveJson({
  model,
  data,
  skipDocs,
  report,
  staticChoice,
  seconds,
}: Outcome): Record<string, unknown> {
  const { config } = model;
  return {
    model: modelInfo(model),
    protocol: 'continuation',
    adaptive: { attention: report.adaptive.attention, mlp: report.adaptive.mlp },
    data,
    skip_docs: skipDocs,
    documents: report.documents,
    skipped_short: report.skippedShort,
    prompt_tokens: report.promptTokens,
    full: fidelityJson(report.full),
    adaptive_fidelity: fidelityJson(report.adaptiveFidelity),
    kv_bytes_per_token:
      (kvBytesPerToken(config, []) * (config.numLayers - report.adaptive.attention)) / config.numLayers,
    kv_bytes_per_token_full: kvBytesPerToken(config, []),
    distinct_masks: report.masks.length,
    masks: report.masks.map((m) => ({
      drop_attention: m.drops.dropAttention,
      drop_mlp: m.drops.dropMlp,
      documents: m.documents,
      adaptive: fidelityJson(m.adaptive),
      best_static: fidelityJson(m.bestStatic),
    })),
    static_choice: staticChoice,
    static: report.static.map((s) => ({
      drop_attention: s.drops.dropAttention,
      drop_mlp: s.drops.dropMlp,
      ...fidelityJson(s.fidelity),
    })),
    verdict: verdictOf(report),
    seconds,
  };
}

function adaptiveTable({ model, data, skipDocs, report, staticChoice, seconds }: Outcome): string {
  const row = (label: string, value: string): string => `${label.padEnd(16)}${value}`;
  const line = (name: string, f: ContinuationFidelity): string =>
    `${name.padEnd(28)}${f.deltaNll.toFixed(4).padStart(9)}${`${(100 * f.agreement).toFixed(2)}%`.padStart(10)}${f.kl.toFixed(4).padStart(9)}${Math.exp(f.nll).toFixed(4).padStart(10)}`;
  const best = report.static[0];
  const lines = [
    row('model', model.source.description),
    row(
      'data',
      `${data}: ${report.documents} documents from #${skipDocs}${report.skippedShort > 0 ? ` (${report.skippedShort} skipped: no token after the prompt)` : ''}`,
    ),
    row(
      'protocol',
      `continuation: the first ${report.promptTokens} tokens (BOS included) are the prompt, ${report.full.positions.toLocaleString('en-US')} continuation tokens scored teacher-forced`,
    ),
    '',
    `${'variant'.padEnd(28)}${'ΔNLL'.padStart(9)}${'top-1'.padStart(10)}${'KL'.padStart(9)}${'ppl'.padStart(10)}`,
    line('full model', report.full),
    line(`adaptive ${specText(report.adaptive)}`, report.adaptiveFidelity),
    ...(best ? [line(`static ${dropsText(best.drops)} (best)`, best.fidelity)] : []),
    ...report.static.slice(1).map((s) => line(`static ${dropsText(s.drops)}`, s.fidelity)),
    '',
    row('static plans', staticChoice),
    row(
      'distinct masks',
      `${report.masks.length}: ${report.masks.map((m) => `${dropsText(m.drops)} ×${m.documents}`).join(', ')}`,
    ),
    ...(best && report.masks.length > 1
      ? [
          '',
          `on each mask's own documents: adaptive vs the best static plan (${dropsText(best.drops)})`,
          `${'prompts chose'.padEnd(20)}${'documents'.padStart(10)}${'ΔNLL adaptive'.padStart(15)}${'ΔNLL static'.padStart(13)}${'top-1 adaptive'.padStart(16)}${'top-1 static'.padStart(14)}`,
          ...report.masks.map(
            (m) =>
              `${dropsText(m.drops).padEnd(20)}${String(m.documents).padStart(10)}${m.adaptive.deltaNll.toFixed(4).padStart(15)}${m.bestStatic.deltaNll.toFixed(4).padStart(13)}${`${(100 * m.adaptive.agreement).toFixed(2)}%`.padStart(16)}${`${(100 * m.bestStatic.agreement).toFixed(2)}%`.padStart(14)}`,
          ),
          '',
        ]
      : []),
    row('verdict', verdictOf(report)),
    row('time', `${seconds.toFixed(1)} s`),
  ];
  return `${lines.join('\n')}\n`;
}
