import { parseArgs } from 'node:util';
import { createEngine, type InProcessEngine } from '../engine/engine.ts';
import { DEFAULT_ACCURACY_LEVEL } from '../engine/graph/linear-weights.ts';
import { syntheticModel } from '../engine/model/synthetic.ts';
import type { WeightFormat } from '../engine/model/weights.ts';
import { DEFAULT_QUANT_BLOCK } from '../engine/quant/quantize-weights.ts';
import { withWeightOptions } from '../engine/quant/weight-flags.ts';
import { benchRequest, commitId, decodeRate, median, printTable } from './common.ts';

/** stories110M's shape (llama2.c); random weights: decode speed does not depend on their values. */
const SHAPE_110M = {
  numLayers: 12,
  dim: 768,
  hiddenDim: 2048,
  numHeads: 12,
  numKvHeads: 12,
  headDim: 64,
  vocabSize: 32000,
  maxSeqLen: 512,
};
/** 4 of 12 attention layers, middle ones first (the most redundant in the pruning literature). */
const DROPPED_ATTENTION = [4, 5, 6, 7];

interface Arm {
  label: string;
  format: WeightFormat;
  accuracyLevel: number;
  engine: InProcessEngine;
}

/**
 * Decode speed and weight bytes per token of fp32 / int8 / int4 linear layers, each with the full
 * model and with 4 of 12 attention layers dropped, on the 110M shape at one thread. All engines live
 * in one process; rounds interleave every arm so drift on a shared machine hits all alike. Ratios are
 * against fp32 full in the same run. Process CPU time per token is printed too: with one intra-op
 * thread the model runs in this process, so it holds steadier than wall time when cores are shared.
 */
export async function runQuantBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      tokens: { type: 'string', default: '32' },
      reps: { type: 'string', default: '3' },
      'prompt-len': { type: 'string', default: '16' },
      'quant-block': { type: 'string', default: String(DEFAULT_QUANT_BLOCK) },
      /** Weight formats; "+head" also quantizes lm_head (--quantize-lm-head). */
      formats: { type: 'string', default: 'fp32,int8,int4,int8+head,int4+head' },
      /** Also run int8/int4 at these MatMulNBits accuracy levels (e.g. 0), to compare with the default. */
      'accuracy-levels': { type: 'string', default: '' },
      threads: { type: 'string', default: '1' },
    },
  });
  const tokens = Number(values.tokens);
  const reps = Number(values.reps);
  const promptLength = Number(values['prompt-len']);
  const blockSize = Number(values['quant-block']);
  const threads = Number(values.threads);
  const formats = values.formats.split(',');
  const extraLevels = values['accuracy-levels']
    .split(',')
    .filter((s) => s !== '')
    .map(Number)
    .filter((l) => l !== DEFAULT_ACCURACY_LEVEL);
  console.log(
    `bench quant: 110M shape (12 layers, dim 768, hidden 2048, vocab 32000, random weights), batch 1, greedy, ` +
      `${promptLength}-token prompt, ${tokens} tokens × ${reps} reps, ${threads} thread(s), block ${blockSize}, ` +
      `accuracy_level ${DEFAULT_ACCURACY_LEVEL}, commit ${commitId()}`,
  );
  const base = syntheticModel({ ...SHAPE_110M, seed: 110 });
  const variants = [{ name: 'attn-4of12', spec: { dropAttention: DROPPED_ATTENTION, dropMlp: [] } }];
  const arms: Arm[] = [];
  const add = async (arm: string, accuracyLevel: number, label: string) => {
    const started = performance.now();
    const format = arm.replace('+head', '') as WeightFormat;
    const quantizeLmHead = arm.endsWith('+head');
    const model = withWeightOptions(base, { format, blockSize, quantizeLmHead });
    const engine = await createEngine({ model, servedModelName: label, variants, threads, accuracyLevel });
    arms.push({ label, format, accuracyLevel, engine });
    console.log(`  ${label}: quantize + session ${Math.round(performance.now() - started)} ms`);
  };
  for (const format of formats) await add(format, DEFAULT_ACCURACY_LEVEL, format);
  for (const level of extraLevels) {
    for (const format of formats.filter((f) => f.startsWith('int'))) {
      await add(format, level, `${format}-acc${level}`);
    }
  }
  const prompt = [1, ...Array.from({ length: promptLength - 1 }, (_, i) => 10 + ((i * 7) % 200))];
  const ids = arms.flatMap((a) => [a.label, `${a.label}:${variants[0]!.name}`]);
  const engineOf = (id: string) => arms.find((a) => id === a.label || id.startsWith(`${a.label}:`))!.engine;
  const rates = new Map<string, number[]>(ids.map((id) => [id, []]));
  const cpuMs = new Map<string, number[]>(ids.map((id) => [id, []]));
  for (const id of ids) await decodeRate(engineOf(id), benchRequest(id, prompt, 4)); // warm-up
  for (let r = 0; r < reps; r++) {
    for (const id of ids) {
      const cpuStart = process.cpuUsage();
      const { tokens: n, ms } = await decodeRate(engineOf(id), benchRequest(id, prompt, tokens));
      const cpu = process.cpuUsage(cpuStart);
      rates.get(id)!.push(n / (ms / 1000));
      cpuMs.get(id)!.push((cpu.user + cpu.system) / 1000 / (n + 1));
    }
  }
  const baseId = ids[0]!;
  const baseRate = median(rates.get(baseId)!);
  const baseCpu = median(cpuMs.get(baseId)!);
  const info = new Map(arms.flatMap((a) => a.engine.variants().map((v) => [v.id, v] as const)));
  const baseBytes = info.get(baseId)!.weightBytesPerToken!;
  printTable(
    [
      'weights',
      'variant',
      'weight B/token',
      'vs fp32 full',
      'KV B/token',
      'decode tok/s',
      'vs fp32 full',
      'CPU ms/token',
      'CPU speed-up',
    ],
    ids.map((id) => {
      const v = info.get(id)!;
      const rate = median(rates.get(id)!);
      const cpu = median(cpuMs.get(id)!);
      const [label, variant] = id.split(':');
      return [
        label!,
        variant ?? 'full',
        v.weightBytesPerToken!,
        `${(v.weightBytesPerToken! / baseBytes).toFixed(3)}×`,
        v.kvBytesPerToken,
        rate.toFixed(2),
        `${(rate / baseRate).toFixed(2)}×`,
        cpu.toFixed(1),
        `${(baseCpu / cpu).toFixed(2)}×`,
      ];
    }),
  );
  for (const a of arms) await a.engine.close();
  return 0;
}
