/**
 * `dropserve prune analyze | plan | eval`: usage and dispatch; each subcommand lives in pruning/commands/.
 *
 *   analyze  per-layer scores of attention and MLP sublayers under one metric
 *   plan     choose sublayers to drop (and fit their emulation), write a plan file
 *   eval     perplexity of a variant over a text file, and multiple-choice tasks
 */

import { DropserveError } from '../engine/errors.ts';
import { DEFAULT_PROMPT_TOKENS, MAX_EXHAUSTIVE_PLANS } from '../pruning/adaptive-eval.ts';
import { METRIC_DESCRIPTIONS, METRICS } from '../pruning/analyze.ts';
import { runAnalyzeCommand } from '../pruning/commands/analyze-command.ts';
import { runEvalCommand } from '../pruning/commands/eval-command.ts';
import { EXPORT_FORMATS, runExportCommand } from '../pruning/commands/export-command.ts';
import type { PruneIo } from '../pruning/commands/flags.ts';
import { runPlanCommand } from '../pruning/commands/plan-command.ts';
import { withInterrupt } from '../pruning/interrupt.ts';
import { createProgress } from '../pruning/progress.ts';
import { METHODS } from '../pruning/select.ts';
import { DEFAULT_SAMPLES, DEFAULT_SEQ_LEN } from '../pruning/workspace.ts';

export type { PruneIo };

const processIo: PruneIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

const EXIT_INTERRUPTED = 130;

const COMMON_FLAGS = `  --model M          llama2.c .bin, .gguf, Hugging Face directory, org/name in the local HF cache, or
                     synthetic[:SEED] (default: the built-in stories260K)
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
  --emulate E        none | bias | lowrank | lowrank:R  (default none; lowrank = rank 8): fit a
                     replacement for each dropped sublayer, written to <out>.emulation.json
  --emulate-fit F    sequential (default): fit each dropped sublayer in depth order inside the
                     pruned network, ridge chosen on a validation split, kept only where it lowers
                     the validation loss (else a plain drop); full: fit all on full-model
                     activations of every calibration sample, ridge 1e-3, no gate
  --validation-samples N  sequential fit: last N calibration samples validate (default a quarter)
  --out FILE         plan file to write (atomically)
  --json             print a JSON summary`,
  eval: `usage: dropserve prune eval --data FILE [--model M] [--plan plan.json | --drop-attention 1,3 --drop-mlp 2]
       dropserve prune eval --data FILE --adaptive attn:K[,mlp:M] [--prompt-tokens N] [--plan … | --drop-attention …]
${COMMON_FLAGS}
  --plan FILE        plan file (and its emulation side file)
  --drop-attention L comma-separated attention layers to drop (instead of --plan)
  --drop-mlp L       comma-separated MLP layers to drop
  --skip-docs N      skip the first N documents (or windows)
  --max-docs N       score at most N documents (or windows)
  --tasks FILE       multiple-choice tasks, JSONL lines {context, choices[], label}
  --adaptive SPEC    attn:K, mlp:M or attn:K,mlp:M: the continuation protocol instead of perplexity.
                     Per document the first --prompt-tokens tokens are the prompt, the rest is
                     scored teacher-forced against the full model (ΔNLL, top-1 agreement, KL) for
                     the adaptive variant (as served: prompt through the full model, continuation
                     without the K/M sublayers that prompt found least influential, over the kept
                     layers' prompt KV) and for static plans dropping as many: every such plan
                     (at most ${MAX_EXHAUSTIVE_PLANS}) or the one --plan / --drop-attention names.
                     Needs a file of documents; prints the distinct drop sets and a verdict
  --prompt-tokens N  with --adaptive: prompt length in tokens, BOS included (default ${DEFAULT_PROMPT_TOKENS})
  --weights W        fp32|fp16|int8|int4: storage of the linear layers (default fp32)
  --quant-block N    values per scale for int8/int4 (default 32)
  --quantize-lm-head also quantize lm_head
  --json             print JSON`,
  export: `usage: dropserve prune export --plan plan.json --format ${EXPORT_FORMATS.join('|')} --out DIR_OR_FILE [--model M]
  --model M          the full model the plan was made for (llama2.c .bin or Hugging Face directory;
                     default: the built-in stories260K)
  --tokenizer T      tokenizer of a llama2.c model (default: found beside it)
  --plan FILE        plan file (and its emulation side file)
  --format F         hf:   a standard Hugging Face Llama/Mistral/Qwen2 directory without the dropped
                           blocks (whole layers only)
                     deci: a DeciLM directory (vLLM DeciLMForCausalLM, llama.cpp deci) with per-layer
                           block_configs; any plan; low-rank emulation becomes replace_with_linear
                     gguf: a GGUF file (llama for whole blocks, deci for sublayers)
  --out PATH         directory (hf, deci) or file (gguf) to write; refuses a non-empty one unless --force
  --type T           gguf only: f32|f16|q8_0|q4_0 storage of the matrices (default f32)
  --drop-emulation   export emulations a format cannot express (deci: bias; hf, gguf: any) as plain drops
  --force            replace --out
  --json             print a JSON summary`,
} as const;

type Subcommand = keyof typeof USAGE;

export async function runPruneCommand(argv: string[], io: PruneIo = processIo): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || !(sub in USAGE)) {
    const text = `usage: dropserve prune analyze|plan|eval|export [flags]   (dropserve prune <sub> --help)\n\n${USAGE.analyze}\n\n${USAGE.plan}\n\n${USAGE.eval}\n\n${USAGE.export}\n`;
    if (sub === undefined || sub === '--help' || sub === '-h') {
      io.stdout(text);
      return sub === undefined ? 2 : 0;
    }
    io.stderr(`dropserve prune: unknown subcommand "${sub}"; valid: analyze, plan, eval, export\n`);
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
      if (name === 'analyze') return await runAnalyzeCommand(rest, io, progress, signal);
      if (name === 'plan') return await runPlanCommand(rest, io, progress, signal);
      if (name === 'export') return await runExportCommand(rest, io);
      return await runEvalCommand(rest, io, progress, signal);
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
