import { parseArgs } from 'node:util';
import { parseDevice } from '../engine/device.ts';
import type { SublayerMask } from '../engine/graph/io.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { dropMask, fullMask } from '../engine/reference/forward.ts';
import { DeviceKvGraphs } from '../kv-cache/device-arena.ts';
import {
  type DeviceDecodeResult,
  deviceGreedyDecode,
  type GreedyRequest,
} from '../kv-cache/device-decode.ts';
import { type KvLayout, kvBytesPerToken, kvShapeBytes } from '../kv-cache/kv-layout.ts';
import { commitId, median, printTable, STORIES260K } from './common.ts';
import { hostGreedyDecode } from './gpu-host-decode.ts';

/**
 * `bench gpu`: the device-resident KV cache (kv-cache/device-arena.ts) against KV in JS memory (the
 * engine's path today), on the same execution provider, in one run: decode tok/s, TTFT and
 * host↔device bytes per decode step for the full model and attention-dropped variants at batch 1
 * and 16; then how many sequences of a given context each variant fits in a device KV budget.
 * Every configuration runs once untimed first (shader compilation), then `--rounds` times; medians.
 */
export async function runGpuBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      device: { type: 'string', default: 'webgpu' },
      model: { type: 'string', default: STORIES260K },
      batches: { type: 'string', default: '1,16' },
      prompt: { type: 'string', default: '32' },
      tokens: { type: 'string', default: '32' },
      rounds: { type: 'string', default: '3' },
      'block-tokens': { type: 'string', default: '16' },
      'kv-budget-mib': { type: 'string', default: '256' },
      context: { type: 'string', default: '' },
    },
  });
  const device = parseDevice(values.device);
  const model = await loadModel({ model: values.model });
  const { numLayers: L, vocabSize, maxSeqLen } = model.config;
  const batches = values.batches.split(',').map(Number);
  const promptLength = Math.min(Number(values.prompt), maxSeqLen - Number(values.tokens));
  const tokens = Number(values.tokens);
  const rounds = Number(values.rounds);
  const blockTokens = Number(values['block-tokens']);
  console.log(
    `bench gpu: --device ${device}, ${model.source.id}, batch ${batches.join(' and ')}, ${promptLength}-token prompts, ${tokens} greedy tokens, ${rounds} rounds after a warm-up, block ${blockTokens}, commit ${commitId()}`,
  );

  const variants = variantMasks(L);
  const rows: (string | number)[][] = [];
  const session = await ModelSession.create(model.config, model.weights, { device, kvOnDevice: true });
  const hostSession = await ModelSession.create(model.config, model.weights, { device });
  try {
    for (const { name, mask } of variants) {
      const graphs = await DeviceKvGraphs.create(layoutOf(model, mask), device);
      for (const batch of batches) {
        const measure = async (kind: 'device' | 'host', round: number) => {
          const requests = benchRequests(vocabSize, batch, promptLength, tokens, `${kind}${round}`);
          return kind === 'device'
            ? summarize(await deviceGreedyDecode(session, graphs, mask, requests, blockTokens))
            : summarize(await hostGreedyDecode(hostSession, mask, requests, blockTokens));
        };
        const results = { device: [] as Summary[], host: [] as Summary[] };
        for (let round = -1; round < rounds; round++) {
          for (const kind of ['host', 'device'] as const) {
            const s = await measure(kind, round);
            if (round >= 0) results[kind].push(s); // round -1 compiles shaders
          }
        }
        const host = medianSummary(results.host);
        const dev = medianSummary(results.device);
        const label = `${name} B=${batch}`;
        rows.push(
          [
            `${label} host KV`,
            host.tokPerS.toFixed(1),
            host.ttftMs.toFixed(1),
            bytes(host.upPerStep),
            bytes(host.downPerStep),
          ],
          [
            `${label} device KV`,
            dev.tokPerS.toFixed(1),
            dev.ttftMs.toFixed(1),
            bytes(dev.upPerStep),
            bytes(dev.downPerStep),
          ],
          [
            `${label} device/host`,
            ratio(dev.tokPerS, host.tokPerS),
            ratio(dev.ttftMs, host.ttftMs),
            ratio(dev.upPerStep, host.upPerStep),
            ratio(dev.downPerStep, host.downPerStep),
          ],
        );
      }
      await graphs.release();
    }
  } finally {
    await session.release();
    await hostSession.release();
  }
  printTable(['variant / KV', 'decode tok/s', 'TTFT ms (p50 of rows)', 'up B/step', 'down B/step'], rows);

  const budgetBytes = Number(values['kv-budget-mib']) * 2 ** 20;
  const context = values.context ? Number(values.context) : maxSeqLen;
  console.log(
    `\nsequences of ${context} tokens that fit in a ${values['kv-budget-mib']} MiB device KV budget:`,
  );
  const fullBytes = kvBytesPerToken(layoutOf(model, fullMask(L)));
  printTable(
    ['variant', 'kept attention', 'KV B/token', 'sequences', 'vs full'],
    variants.map(({ name, mask }) => {
      const perToken = kvBytesPerToken(layoutOf(model, mask));
      const fits =
        perToken === 0 ? Infinity : Math.floor(budgetBytes / kvShapeBytes(perToken, 1, context, blockTokens));
      const fullFits = Math.floor(budgetBytes / kvShapeBytes(fullBytes, 1, context, blockTokens));
      return [name, `${mask.attnKeep.filter(Boolean).length}/${L}`, perToken, fits, ratio(fits, fullFits)];
    }),
  );
  return 0;
}

/** The full model, every other attention layer dropped, and all but the last dropped. */
function variantMasks(numLayers: number): { name: string; mask: SublayerMask }[] {
  const odd = [...Array(numLayers).keys()].filter((l) => l % 2 === 1);
  const allButLast = [...Array(numLayers - 1).keys()];
  return [
    { name: 'full', mask: fullMask(numLayers) },
    { name: `drop attn ${odd.join(',')}`, mask: dropMask(numLayers, odd) },
    { name: `drop attn 0-${numLayers - 2}`, mask: dropMask(numLayers, allButLast) },
  ];
}

function layoutOf(model: LoadedModel, mask: SublayerMask): KvLayout {
  const { numKvHeads, headDim, maxSeqLen } = model.config;
  return { keptLayers: mask.attnKeep.flatMap((k, l) => (k ? [l] : [])), numKvHeads, headDim, maxSeqLen };
}

/** Fixed-length prompts (BOS + a deterministic token walk), all joining at step 0, all running to `tokens`. */
function benchRequests(
  vocab: number,
  batch: number,
  length: number,
  tokens: number,
  tag: string,
): GreedyRequest[] {
  return Array.from({ length: batch }, (_, b) => ({
    id: `${tag}-${b}`,
    prompt: [1, ...Array.from({ length: length - 1 }, (_, i) => 3 + ((b * 131 + i * 37 + 11) % (vocab - 3)))],
    maxTokens: tokens,
  }));
}

interface Summary {
  tokPerS: number;
  ttftMs: number;
  upPerStep: number;
  downPerStep: number;
}

function summarize(result: Pick<DeviceDecodeResult, 'steps' | 'firstTokenMs'>): Summary {
  const decodeMs = result.steps.reduce((sum, s) => sum + s.ms, 0);
  const decoded = result.steps.reduce((sum, s) => sum + s.batch, 0);
  return {
    tokPerS: (decoded / decodeMs) * 1000,
    ttftMs: median([...result.firstTokenMs.values()]),
    upPerStep: median(result.steps.map((s) => s.hostToDeviceBytes)),
    downPerStep: median(result.steps.map((s) => s.deviceToHostBytes)),
  };
}

function medianSummary(xs: Summary[]): Summary {
  return {
    tokPerS: median(xs.map((x) => x.tokPerS)),
    ttftMs: median(xs.map((x) => x.ttftMs)),
    upPerStep: median(xs.map((x) => x.upPerStep)),
    downPerStep: median(xs.map((x) => x.downPerStep)),
  };
}

function ratio(a: number, b: number): string {
  if (b === 0) return '—';
  const r = a / b;
  // Byte ratios are tiny: two significant digits instead of "0.00×".
  return `${r < 0.1 ? r.toPrecision(2) : r.toFixed(2)}×`;
}

function bytes(n: number): string {
  return n >= 2 ** 20
    ? `${(n / 2 ** 20).toFixed(2)} MiB`
    : n >= 1024
      ? `${(n / 1024).toFixed(1)} KiB`
      : `${n} B`;
}
