import { parseArgs } from 'node:util';
import type { GenerateEvent } from '../engine/client.ts';
import { createEngine } from '../engine/engine.ts';
import { generatedTokenIds } from '../engine/output/token-ids.ts';
import { parseWeightFlags, WEIGHT_FLAG_SPECS } from '../engine/quant/weight-flags.ts';
import { benchModels, benchRequest, commitId, median, printTable } from './common.ts';

/**
 * Aggregate decode throughput under continuous batching: N sequences decoding together share each
 * session.run, so tokens/s should grow with N until the CPU saturates. Full model vs one pruned
 * variant, each level's ratio to concurrency 1, all in one run.
 */
export async function runBatchBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      tokens: { type: 'string', default: '128' },
      levels: { type: 'string', default: '1,4,16' },
      reps: { type: 'string', default: '1' },
      ...WEIGHT_FLAG_SPECS,
    },
  });
  const tokens = Number(values.tokens);
  const levels = values.levels.split(',').map(Number);
  const reps = Number(values.reps);
  console.log(
    `bench batch: greedy, ${tokens} tokens per sequence, concurrency ${levels.join('/')}, median of ${reps}, commit ${commitId()}`,
  );
  for (const { name, model } of await benchModels(parseWeightFlags(values))) {
    const pruned = { name: 'attn-2', spec: { dropAttention: [1, 2], dropMlp: [] } };
    const engine = await createEngine({ model, servedModelName: name, variants: [pruned] });
    const rows: (string | number)[][] = [];
    for (const id of [name, `${name}:${pruned.name}`]) {
      let base = 0;
      for (const level of levels) {
        await Promise.all(
          Array.from({ length: Math.min(level, 4) }, (_, i) =>
            drain(engine.generate(benchRequest(id, [1, 5 + i, 6, 7], 8))),
          ),
        ); // warm-up
        const rates: number[] = [];
        // Process CPU per generated token: with one intra-op thread every run executes in this
        // process, so it holds steady when other processes compete for the cores (wall clock does not).
        const cpuMsPerToken: number[] = [];
        for (let r = 0; r < reps; r++) {
          const started = performance.now();
          const cpuStart = process.cpuUsage();
          const counts = await Promise.all(
            Array.from({ length: level }, (_, i) =>
              drain(engine.generate(benchRequest(id, [1, 5 + i, 6, 7, 8], tokens))),
            ),
          );
          const cpu = process.cpuUsage(cpuStart);
          const seconds = (performance.now() - started) / 1000;
          const generated = counts.reduce((a, b) => a + b, 0);
          rates.push(generated / seconds);
          cpuMsPerToken.push((cpu.user + cpu.system) / 1000 / generated);
        }
        const rate = median(rates);
        if (level === levels[0]) base = rate;
        rows.push([
          id,
          level,
          rate.toFixed(0),
          `${(rate / base).toFixed(2)}×`,
          median(cpuMsPerToken).toFixed(3),
        ]);
      }
    }
    printTable(['variant', 'concurrency', 'aggregate tok/s', 'vs concurrency 1', 'CPU ms/token'], rows);
    console.log('');
    await engine.close();
  }
  return 0;
}

async function drain(events: AsyncIterable<GenerateEvent>): Promise<number> {
  return (await generatedTokenIds(events)).length;
}
