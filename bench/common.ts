import { execSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SAMPLING, type GenerateRequest } from '../engine/client.ts';
import type { InProcessEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { syntheticModel } from '../engine/model/synthetic.ts';
import { DEFAULT_WEIGHT_OPTIONS, type WeightOptions } from '../engine/quant/quantize-weights.ts';
import { withWeightOptions } from '../engine/quant/weight-flags.ts';

/** The trained checkpoint that ships in the repository (models/stories260K), whatever the cwd. */
export const STORIES260K = fileURLToPath(new URL('../models/stories260K/stories260K.bin', import.meta.url));

/** The bench models: stories260K and the synthetic 6L/288/32000 model, linears stored as `weights` (`--weights`). */
export async function benchModels(
  weights: WeightOptions = DEFAULT_WEIGHT_OPTIONS,
): Promise<{ name: string; model: LoadedModel }[]> {
  const models: { name: string; model: LoadedModel }[] = [];
  models.push({ name: 'stories260K', model: await loadModel({ model: STORIES260K }) });
  models.push({
    name: 'synthetic-6L-288-32k',
    model: syntheticModel({
      numLayers: 6,
      dim: 288,
      hiddenDim: 768,
      numHeads: 6,
      numKvHeads: 6,
      headDim: 48,
      vocabSize: 32000,
      maxSeqLen: 512,
    }),
  });
  return models.map(({ name, model }) => ({ name, model: withWeightOptions(model, weights) }));
}

export function commitId(): string {
  try {
    return execSync('git rev-parse --short HEAD', { stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return 'unknown';
  }
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

let counter = 0;

/** Greedy request that always runs to maxTokens (EOS ignored) so every run does the same work. */
export function benchRequest(variant: string, promptTokenIds: number[], maxTokens: number): GenerateRequest {
  return {
    requestId: `bench-${counter++}`,
    variant,
    promptTokenIds,
    maxTokens,
    ignoreEos: true,
    sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
  };
}

/** Decode tokens/s of one sequence, clock started at its first token (as llama2.c). */
export async function decodeRate(
  engine: InProcessEngine,
  request: GenerateRequest,
): Promise<{ tokens: number; ms: number }> {
  let first = 0;
  let last = 0;
  let tokens = 0;
  for await (const event of engine.generate(request)) {
    if (event.type !== 'token') continue;
    if (tokens === 0) first = event.timeMs;
    last = event.timeMs;
    tokens++;
  }
  return { tokens: tokens - 1, ms: last - first };
}

export function printTable(header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]): string =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(line(cells[0]!));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of cells.slice(1)) console.log(line(r));
}
