import { parseArgs } from 'node:util';
import { DEFAULT_SAMPLING } from '../engine/client.ts';
import { parseDevice } from '../engine/device.ts';
import { DropserveError } from '../engine/errors.ts';
import { loadModel } from '../engine/model/load-model.ts';
import { parseAdaptiveFlag } from '../engine/plan/adaptive-flag.ts';
import { type DropSpec, loadPlanFile, parseInlineSpec, validateDropSpec } from '../engine/plan/plan.ts';
import {
  parseWeightFlags,
  WEIGHT_FLAG_SPECS,
  WEIGHT_FLAGS_HELP,
  withWeightOptions,
} from '../engine/quant/weight-flags.ts';
import { variantId } from '../engine/runtime/variant.ts';
import { formatPhases, PhaseClock, type StartupPhase } from '../engine/startup-phases.ts';
import { IncrementalDetokenizer } from '../engine/tokenizer/incremental-detokenizer.ts';
import { createWorkerEngine } from '../engine/worker/worker-engine.ts';
import { createLogger, LOG_LEVELS, type LogLevel } from '../server/logger.ts';
import { parseKvFlags } from './kv-flags.ts';

const HELP = `usage: dropserve generate --prompt TEXT [flags]

  --model PATH|HF_ID      llama2.c .bin, .gguf, Hugging Face directory, cached HF id, or synthetic[:SEED]
                          (default: the built-in stories260K, a TinyStories model)
  --tokenizer PATH        tokenizer for llama2.c checkpoints (default: tok*.bin / tokenizer.bin beside the model)
  --prompt TEXT           prompt (BOS is prepended)
  --max-tokens N          tokens to generate (default 256, capped by the context)
  --temperature T         0 = greedy (default 0)
  --top-p P  --top-k K  --min-p P
  --seed S                seed for sampling (reproducible runs)
  --drop-attention 1,3    attention layers to drop
  --drop-mlp 2            MLP layers to drop
  --plan FILE             pruning plan (instead of --drop-*)
  --adaptive attn:K[,mlp:M]  drop the K (M) sublayers this prompt's prefill finds least influential
                          (instead of --drop-* / --plan); the choice is printed at the end
  --device cpu|cuda|webgpu   --threads N
  --kv-placement host|device   KV cache in JS memory or on the device (default: device on webgpu)
  --kv-dtype fp32|fp16    element type of the device KV cache (fp16: half the bytes)
${WEIGHT_FLAGS_HELP}
  --json                  print one JSON object instead of streaming text
  --log-level LEVEL       ${LOG_LEVELS.join('|')} (default warn; JSON lines on stderr); debug adds the start-up breakdown`;

export async function runGenerateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      tokenizer: { type: 'string' },
      prompt: { type: 'string' },
      'max-tokens': { type: 'string', default: '256' },
      temperature: { type: 'string', default: '0' },
      'top-p': { type: 'string', default: '1' },
      'top-k': { type: 'string', default: '0' },
      'min-p': { type: 'string', default: '0' },
      seed: { type: 'string' },
      'drop-attention': { type: 'string', default: '' },
      'drop-mlp': { type: 'string', default: '' },
      plan: { type: 'string' },
      adaptive: { type: 'string' },
      device: { type: 'string', default: 'cpu' },
      'kv-placement': { type: 'string' },
      'kv-dtype': { type: 'string' },
      threads: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
      'log-level': { type: 'string', default: 'warn' },
      ...WEIGHT_FLAG_SPECS,
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.prompt === undefined)
    throw new DropserveError('DS_INVALID_ARGUMENT', `--prompt is required\n\n${HELP}`);
  const number = (name: string, text: string): number => {
    const n = Number(text);
    if (!Number.isFinite(n))
      throw new DropserveError('DS_INVALID_ARGUMENT', `--${name} must be a number, got "${text}"`);
    return n;
  };

  const logLevel = values['log-level'] as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`,
    );
  }
  const weightOptions = parseWeightFlags(values);
  const logger = createLogger({ level: logLevel, destination: process.stderr });
  // performance.now() counts from process start: the first lap is Node start-up plus module loading.
  const clock = new PhaseClock(0);
  clock.lap('process start → CLI loaded');
  const loadStart = performance.now();
  const model = withWeightOptions(
    await loadModel({ model: values.model, tokenizer: values.tokenizer }),
    weightOptions,
  );
  clock.lap('read model files (weights, tokenizer)');
  const { config, tokenizer } = model;
  let spec: DropSpec;
  const adaptive =
    values.adaptive === undefined ? null : parseAdaptiveFlag(values.adaptive, config.numLayers);
  if (adaptive && (values.plan || values['drop-attention'] || values['drop-mlp'])) {
    throw new DropserveError('DS_INVALID_ARGUMENT', 'give --adaptive or --plan / --drop-*, not both');
  }
  if (values.plan) spec = loadPlanFile(values.plan, config).spec;
  else spec = parseInlineSpec(`attn:${values['drop-attention']};mlp:${values['drop-mlp']}`);
  validateDropSpec(spec, config.numLayers);
  const isPruned =
    adaptive !== null ||
    spec.dropAttention.length > 0 ||
    spec.dropMlp.length > 0 ||
    spec.emulation !== undefined;
  const engine = await createWorkerEngine({
    model,
    servedModelName: model.source.id,
    variants: isPruned ? [{ name: 'cli', spec, ...(adaptive ? { adaptive } : {}) }] : [],
    device: parseDevice(values.device),
    threads: number('threads', values.threads),
    kvCacheBytes: 2 ** 30,
    ...parseKvFlags({ 'kv-placement': values['kv-placement'], 'kv-dtype': values['kv-dtype'] }),
  });
  const loadMs = performance.now() - loadStart;
  clock.lap('engine start (worker)');
  const startup: StartupPhase[] = [...clock.phases.slice(0, -1), ...engine.startupPhases];
  const variant = variantId(model.source.id, isPruned ? 'cli' : undefined);
  try {
    const promptTokenIds = tokenizer.encode(values.prompt, { addBos: true });
    const maxTokens = Math.min(
      number('max-tokens', values['max-tokens']),
      config.maxSeqLen - promptTokenIds.length,
    );
    const detokenizer = new IncrementalDetokenizer(tokenizer, promptTokenIds);
    const completion: number[] = [];
    let text = '';
    if (!values.json) process.stdout.write(values.prompt);
    for await (const event of engine.generate({
      requestId: 'generate',
      variant,
      promptTokenIds,
      maxTokens,
      sampling: {
        ...DEFAULT_SAMPLING,
        temperature: number('temperature', values.temperature),
        topP: number('top-p', values['top-p']),
        topK: number('top-k', values['top-k']),
        minP: number('min-p', values['min-p']),
        seed: values.seed === undefined ? undefined : number('seed', values.seed),
      },
    })) {
      if (event.type === 'token') {
        if (completion.length === 0) {
          clock.lap('first token (prefill)');
          startup.push(clock.phases.at(-1)!);
          const toFirstTokenMs = performance.now();
          logger.debug(
            { phases: startup, processStartToFirstTokenMs: Math.round(toFirstTokenMs) },
            `start-up: ${formatPhases(startup)}; process start → first token ${Math.round(toFirstTokenMs)} ms`,
          );
        }
        completion.push(event.tokenId);
        const delta = detokenizer.push(event.tokenId);
        text += delta;
        if (!values.json) process.stdout.write(delta);
        continue;
      }
      const tail = detokenizer.flush();
      text += tail;
      const t = event.timings;
      const prefillMs = (t.prefillEndMs ?? t.finishedMs) - (t.scheduledMs ?? t.arrivalMs);
      const decodeMs =
        t.firstTokenMs !== undefined && t.lastTokenMs !== undefined ? t.lastTokenMs - t.firstTokenMs : 0;
      // As llama2.c: the clock starts after the first token, so tokens/s is over the other n − 1.
      const decodeTokensPerSecond =
        completion.length > 1 && decodeMs > 0 ? (completion.length - 1) / (decodeMs / 1000) : 0;
      const info = engine.variants().find((v) => v.id === variant)!;
      const { kvBytesPerToken } = info;
      const weightBytesPerToken = info.weightBytesPerToken ?? 0;
      // Bytes between JS memory and the device per decode step (model run + KV update; 0 on the CPU).
      const transfer = info.deviceTransfer;
      const perStep = (bytes: number): number =>
        transfer && transfer.decodeSteps > 0 ? round(bytes / transfer.decodeSteps) : 0;
      if (values.json) {
        console.log(
          JSON.stringify({
            text,
            completion_tokens: completion,
            prompt_tokens: promptTokenIds.length,
            finish_reason: event.reason,
            ...(event.adaptiveDrops ? { adaptive_drops: event.adaptiveDrops } : {}),
            kv_bytes_per_token: kvBytesPerToken,
            weight_bytes_per_token: weightBytesPerToken,
            weight_format: weightOptions.format,
            timings: {
              load_ms: round(loadMs),
              prefill_ms: round(prefillMs),
              decode_ms: round(decodeMs),
              decode_tokens_per_second: round(decodeTokensPerSecond),
              host_to_device_bytes_per_decode_step: perStep(transfer?.hostToDeviceBytes ?? 0),
              device_to_host_bytes_per_decode_step: perStep(transfer?.deviceToHostBytes ?? 0),
            },
            kv_cache_placement: info.kvCachePlacement,
          }),
        );
      } else {
        process.stdout.write(`${tail}\n`);
        const drops = event.adaptiveDrops
          ? ` adaptive, dropped attention [${event.adaptiveDrops.attention.join(',')}] mlp [${event.adaptiveDrops.mlp.join(',')}];`
          : '';
        console.error(
          `\n[${variant}]${drops} ${promptTokenIds.length} prompt + ${completion.length} generated tokens (${event.reason}); ` +
            `load ${round(loadMs)} ms, prefill ${round(prefillMs)} ms, decode ${round(decodeTokensPerSecond)} tok/s; ` +
            `KV ${kvBytesPerToken} B/token, weights (${weightOptions.format}) ${weightBytesPerToken} B/token`,
        );
      }
      if (event.reason === 'error')
        throw new DropserveError('DS_ORT_RUN_FAILED', event.error?.message ?? 'generation failed');
    }
  } finally {
    await engine.close();
  }
  return 0;
}

const round = (x: number): number => Math.round(x * 100) / 100;
