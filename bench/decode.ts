import { parseArgs } from 'node:util';
import { createEngine } from '../engine/engine.ts';
import { parseWeightFlags, WEIGHT_FLAG_SPECS } from '../engine/quant/weight-flags.ts';
import { benchModels, benchRequest, commitId, decodeRate, median, printTable } from './common.ts';

/**
 * Decode speed of attention-dropped variants against the full model, batch 1, in one run: the
 * variants share one session (one weight copy), and runs are interleaved so drift hits all alike.
 */
export async function runDecodeBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      tokens: { type: 'string', default: '200' },
      reps: { type: 'string', default: '5' },
      'prompt-len': { type: 'string', default: '8' },
      ...WEIGHT_FLAG_SPECS,
    },
  });
  const tokens = Number(values.tokens);
  const reps = Number(values.reps);
  const promptLength = Number(values['prompt-len']);
  console.log(
    `bench decode: batch 1, greedy, ${promptLength}-token prompt, ${tokens} tokens × ${reps} reps, 1 thread, weights ${values.weights ?? 'fp32'}, commit ${commitId()}`,
  );
  for (const { name, model } of await benchModels(parseWeightFlags(values))) {
    const layers = model.config.numLayers;
    // Drop the middle attention layers first: the literature finds the deep/middle ones most redundant.
    const order = Array.from({ length: layers - 1 }, (_, i) => i + 1);
    const drops = [1, 2, Math.floor(layers / 2)].filter((k, i, a) => k < layers && a.indexOf(k) === i);
    const variants = drops.map((k) => ({
      name: `attn-${k}`,
      spec: { dropAttention: order.slice(0, k), dropMlp: [] },
    }));
    const engine = await createEngine({ model, servedModelName: name, variants });
    const ids = [name, ...variants.map((v) => `${name}:${v.name}`)];
    // Longer prompts make attention (which dropping removes) a larger share of each step.
    const prompt = [
      model.config.bosTokenId,
      ...Array.from({ length: promptLength - 1 }, (_, i) => 10 + ((i * 7) % 200)),
    ];
    if (promptLength + tokens > model.config.maxSeqLen) {
      console.log(
        `${name}: skipped, ${promptLength} + ${tokens} tokens exceed its context of ${model.config.maxSeqLen}`,
      );
      await engine.close();
      continue;
    }
    const rates = new Map<string, number[]>(ids.map((id) => [id, []]));
    // Process CPU time per generated token (prefill included): with one intra-op thread the runs
    // execute in this process, so it holds steady when other processes compete for the cores.
    const cpuMsPerToken = new Map<string, number[]>(ids.map((id) => [id, []]));
    await decodeRate(engine, benchRequest(name, prompt, 16)); // warm-up
    for (let r = 0; r < reps; r++) {
      for (const id of ids) {
        const cpuStart = process.cpuUsage();
        const { tokens: n, ms } = await decodeRate(engine, benchRequest(id, prompt, tokens));
        const cpu = process.cpuUsage(cpuStart);
        rates.get(id)!.push(n / (ms / 1000));
        cpuMsPerToken.get(id)!.push((cpu.user + cpu.system) / 1000 / (n + 1));
      }
    }
    const base = median(rates.get(name)!);
    const baseCpu = median(cpuMsPerToken.get(name)!);
    const info = engine.variants();
    printTable(
      [
        'variant',
        'dropped attn',
        'KV B/token',
        'decode tok/s',
        'ms/token',
        'vs full',
        'CPU ms/token',
        'CPU vs full',
      ],
      ids.map((id) => {
        const v = info.find((x) => x.id === id)!;
        const rate = median(rates.get(id)!);
        const cpu = median(cpuMsPerToken.get(id)!);
        return [
          id,
          v.spec.dropAttention.join(',') || '-',
          v.kvBytesPerToken,
          rate.toFixed(0),
          (1000 / rate).toFixed(3),
          `${(rate / base).toFixed(2)}×`,
          cpu.toFixed(3),
          `${(cpu / baseCpu).toFixed(2)}×`,
        ];
      }),
    );
    console.log('');
    await engine.close();
  }
  return 0;
}
