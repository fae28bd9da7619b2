/**
 * The device-resident KV cache (kv-cache/device-arena.ts): its tokens against the host path (K/V in
 * JS memory, engine/graph/testing/js-kv-cache.ts), its device bytes per token, and the host↔device
 * bytes per decode step. The same code runs on the CPU EP in every environment (the logic), and on
 * WebGPU where a Vulkan driver is present (CI installs lavapipe; elsewhere that suite skips and says why).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { webGpuUnavailableReason } from '../engine/device.ts';
import type { SublayerMask } from '../engine/graph/io.ts';
import { ModelSession } from '../engine/graph/model-session.ts';
import { argmax, JsKvCache, runAndCache } from '../engine/graph/testing/js-kv-cache.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { dropMask, fullMask } from '../engine/reference/forward.ts';
import { DeviceKvArena, DeviceKvGraphs } from '../kv-cache/device-arena.ts';
import { deviceGreedyDecode, type GreedyRequest } from '../kv-cache/device-decode.ts';
import { DeviceKvCachePool } from '../kv-cache/device-pool.ts';
import type { KvLayout } from '../kv-cache/kv-layout.ts';
import { kvBytesPerToken } from '../kv-cache/kv-layout.ts';
import { missingAssets, STORIES_260K, TINYSTORIES_656K } from './support/shared-assets.ts';

const WEBGPU_REASON = await webGpuUnavailableReason();

/** A near-tie: fp32 on another device may legitimately pick the other token. */
const NEAR_TIE_GAP = 1e-3;

const STORY_PROMPTS = [
  'Once upon a time',
  'The little dog',
  'Lily and Tom went to the park',
  'One day, a bird',
];
const MORE_PROMPTS = ['Tim had a red ball', 'The sun was hot', 'A big fish swam', 'Mom said'];

function layoutOf(model: LoadedModel, mask: SublayerMask): KvLayout {
  const { numKvHeads, headDim, maxSeqLen } = model.config;
  const keptLayers = mask.attnKeep.flatMap((kept, l) => (kept ? [l] : []));
  return { keptLayers, numKvHeads, headDim, maxSeqLen };
}

function encode(model: LoadedModel, text: string): number[] {
  return model.tokenizer.encode(text, { addBos: true });
}

/** Greedy tokens of one prompt on the host path, and each step's top-1 minus top-2 logit. */
async function hostGreedy(
  session: ModelSession,
  mask: SublayerMask,
  prompt: number[],
  maxTokens: number,
): Promise<{ tokens: number[]; gaps: number[] }> {
  const cache = new JsKvCache(session.config, 1, prompt.length + maxTokens, mask.attnKeep);
  const tokens: number[] = [];
  const gaps: number[] = [];
  let logits = (await runAndCache(session, cache, [prompt], mask)).at(-1)!;
  for (;;) {
    const best = argmax(logits);
    tokens.push(best);
    gaps.push(logits[best]! - Math.max(...logits.filter((_, i) => i !== best)));
    if (tokens.length >= maxTokens) return { tokens, gaps };
    [logits] = await runAndCache(session, cache, [[best]], mask);
  }
}

/**
 * Expects the device's tokens to be the host's. A divergence is accepted only at a near-tie of the
 * host's logits, and is reported with its position and gap.
 */
function expectSameGreedy(label: string, device: number[], host: { tokens: number[]; gaps: number[] }): void {
  expect(device).toHaveLength(host.tokens.length);
  const first = device.findIndex((t, i) => t !== host.tokens[i]);
  if (first < 0) return;
  const gap = host.gaps[first]!;
  const report = `${label}: first divergence at token ${first} (device ${device[first]}, host ${host.tokens[first]}), host logit gap ${gap.toExponential(2)}`;
  console.warn(report);
  expect(gap, report).toBeLessThanOrEqual(NEAR_TIE_GAP);
}

interface VariantRun {
  mask: SublayerMask;
  requests: GreedyRequest[];
}

/** Runs each variant's requests through one device-KV session, all variants at once. */
/**
 * Block size of the WebGPU runs: on lavapipe every new tensor shape compiles new shaders (seconds
 * each with a cold Mesa cache), so a capacity that seldom changes keeps CI's first run short.
 */
const WEBGPU_BLOCK_TOKENS = 64;

async function runVariants(model: LoadedModel, device: 'cpu' | 'webgpu', variants: VariantRun[]) {
  const blockTokens = device === 'webgpu' ? WEBGPU_BLOCK_TOKENS : 16;
  const session = await ModelSession.create(model.config, model.weights, { device, kvOnDevice: true });
  try {
    return await Promise.all(
      variants.map(async ({ mask, requests }) => {
        const graphs = await DeviceKvGraphs.create(layoutOf(model, mask), device);
        try {
          return await deviceGreedyDecode(session, graphs, mask, requests, blockTokens);
        } finally {
          await graphs.release();
        }
      }),
    );
  } finally {
    await session.release();
  }
}

async function expectVariantsMatchHost(
  model: LoadedModel,
  variants: VariantRun[],
  results: Awaited<ReturnType<typeof runVariants>>,
) {
  const host = await ModelSession.create(model.config, model.weights);
  try {
    for (const [v, { mask, requests }] of variants.entries()) {
      for (const r of requests) {
        const want = await hostGreedy(host, mask, r.prompt, r.maxTokens);
        expectSameGreedy(`variant ${v} ${r.id}`, results[v]!.tokens.get(r.id)!, want);
      }
    }
  } finally {
    await host.release();
  }
}

/** Requests that join at staggered steps and leave at different lengths (continuous batching). */
function staggered(
  model: LoadedModel,
  prompts: string[],
  maxTokens: number,
  prefix: string,
): GreedyRequest[] {
  return prompts.map((text, i) => ({
    id: `${prefix}${i}`,
    prompt: encode(model, text),
    maxTokens: maxTokens - 2 * i,
    joinAtStep: 3 * i,
  }));
}

describe('device-resident KV on the CPU EP (the bookkeeping and graphs, no GPU needed)', () => {
  const model = loadModel({ model: STORIES_260K });
  const L = 5;

  it('gives the host path’s greedy tokens while requests join and leave, full and pruned variants at once', async () => {
    const m = await model;
    const variants = [
      { mask: fullMask(L), requests: staggered(m, STORY_PROMPTS, 24, 'full') },
      { mask: dropMask(L, [1, 3]), requests: staggered(m, STORY_PROMPTS, 24, 'pruned') },
    ];
    const results = await runVariants(m, 'cpu', variants);
    await expectVariantsMatchHost(m, variants, results);
    // Several rows ran together: the batch grew to all four, and shrank as requests left.
    const batches = results[0]!.steps.map((s) => s.batch);
    expect(Math.max(...batches)).toBe(4);
    expect(batches.at(-1)).toBe(1);
    // Nothing crosses a device boundary on the CPU EP.
    expect(results[0]!.steps.every((s) => s.hostToDeviceBytes === 0 && s.deviceToHostBytes === 0)).toBe(true);
  });

  it('copies a prefix into another row and grows rows/capacity in blocks, on the device', async () => {
    const m = await model;
    const mask = fullMask(L);
    const layout = layoutOf(m, mask);
    const graphs = await DeviceKvGraphs.create(layout, 'cpu');
    const session = await ModelSession.create(m.config, m.weights, { kvOnDevice: true });
    const host = await ModelSession.create(m.config, m.weights);
    try {
      const arena = new DeviceKvArena(graphs, 16);
      const prompt = encode(m, STORY_PROMPTS[2]!);
      const a = await arena.addRow('a');
      await arena.reserveTokens(prompt.length);
      const prefill = await session.runDeviceKv({
        batchSize: 1,
        seqLen: prompt.length,
        inputIds: prompt,
        positionIds: prompt.map((_, i) => i),
        mask,
        pastLengths: [0],
        past: Array(L).fill(null),
        pastCapacity: 0,
        logitsIndex: [prompt.length - 1],
      });
      await arena.append([a], prompt.length, prefill.newKv);
      const b = await arena.addRow('b');
      await arena.copyPrefix(a, b, prompt.length - 1);
      expect([arena.numRows, arena.tokenCapacity, arena.length(b)]).toEqual([2, 16, prompt.length - 1]);
      // Row b feeds the prompt's last token on top of the copied prefix: the logits of row a's prefill.
      const lengths = [arena.length(a), arena.length(b)];
      await arena.reserveTokens(Math.max(...lengths) + 1);
      const step = await session.runDeviceKv({
        batchSize: 2,
        seqLen: 1,
        inputIds: [argmax(prefill.logits), prompt.at(-1)!],
        positionIds: lengths,
        mask,
        pastLengths: lengths,
        past: arena.past(L),
        pastCapacity: arena.tokenCapacity,
        logitsIndex: [0, 1],
      });
      const vocab = m.config.vocabSize;
      const rowB = step.logits.subarray(vocab, 2 * vocab);
      expect(Math.max(...rowB.map((x, i) => Math.abs(x - prefill.logits[i]!)))).toBeLessThan(1e-4);
      await arena.append([a, b], 1, step.newKv);
      // Row a's continuation equals the host path's second token.
      const want = await hostGreedy(host, mask, prompt, 2);
      expect(argmax(step.logits.subarray(0, vocab))).toBe(want.tokens[1]);
      await arena.removeRow('a');
      expect([arena.numRows, arena.sequenceIdAt(0), arena.length(0)]).toEqual([1, 'b', prompt.length]);
    } finally {
      await Promise.all([graphs.release(), session.release(), host.release()]);
    }
  });

  it('refuses device-KV sessions it cannot serve, with coded errors', async () => {
    const m = await model;
    const create = (options: Parameters<typeof ModelSession.create>[2]) =>
      ModelSession.create(m.config, m.weights, options);
    await expect(create({ device: 'cuda', kvOnDevice: true })).rejects.toMatchObject({
      code: 'DS_INVALID_ARGUMENT',
    });
    await expect(create({ kvOnDevice: true, outputHiddenStates: true })).rejects.toMatchObject({
      code: 'DS_INVALID_ARGUMENT',
    });
    const session = await create({ kvOnDevice: true });
    const host = await create({});
    try {
      const input = {
        batchSize: 1,
        seqLen: 1,
        inputIds: [1],
        positionIds: [0],
        mask: fullMask(L),
        pastLengths: [0],
        pastCapacity: 0,
        logitsIndex: [0],
      };
      await expect(session.run({ ...input, past: Array(L).fill(null) })).rejects.toMatchObject({
        code: 'DS_INVALID_ARGUMENT',
        message: expect.stringMatching(/use runDeviceKv/),
      });
      await expect(host.runDeviceKv({ ...input, past: Array(L).fill(null) })).rejects.toMatchObject({
        code: 'DS_INVALID_ARGUMENT',
        message: expect.stringMatching(/kvOnDevice/),
      });
    } finally {
      await Promise.all([session.release(), host.release()]);
    }
  });

  it('keeps every arena of a pool within one device budget: growth past it fails with DS_KV_EXHAUSTED', async () => {
    const m = await model;
    const full = await DeviceKvGraphs.create(layoutOf(m, fullMask(L)), 'cpu');
    const pruned = await DeviceKvGraphs.create(layoutOf(m, dropMask(L, [0, 1, 2, 3])), 'cpu');
    try {
      const perRowBlock = 16 * kvBytesPerToken(full.layout); // one row, one block, full model
      const pool = new DeviceKvCachePool({ budgetBytes: 2 * perRowBlock, blockTokens: 16 });
      const a = pool.addArena('full', full);
      await a.addRow('x');
      await a.addRow('y');
      expect(pool.allocatedBytes).toBe(2 * perRowBlock);
      // The budget is checked when the change is asked for, before anything is queued on the device.
      expect(() => a.addRow('z')).toThrow(expect.objectContaining({ code: 'DS_KV_EXHAUSTED' }));
      expect(() => a.reserveTokens(17)).toThrow(expect.objectContaining({ code: 'DS_KV_EXHAUSTED' }));
      // A failed growth leaves the arena as it was.
      expect([a.numRows, a.tokenCapacity, pool.allocatedBytes]).toEqual([2, 16, 2 * perRowBlock]);
      // A row leaving gives its bytes back, and another variant's arena may take them: at a fifth of
      // the bytes per token, five of its rows fit where one full-model row did.
      await a.removeRow('x');
      const b = pool.addArena('pruned', pruned);
      for (const id of ['p0', 'p1', 'p2', 'p3', 'p4']) await b.addRow(id);
      expect(() => b.addRow('p5')).toThrow(expect.objectContaining({ code: 'DS_KV_EXHAUSTED' }));
      await b.pastViews(); // the queued growth is done
      expect(pool.allocatedBytes).toBe(2 * perRowBlock);
      expect(pool.stats('pruned')).toEqual({
        bytesPerToken: kvBytesPerToken(pruned.layout),
        sequences: 5,
        usedBytes: 0,
        allocatedBytes: perRowBlock,
      });
      expect(pool.placement).toBe('device');
    } finally {
      await Promise.all([full.release(), pruned.release()]);
    }
  });

  it('holds kept/total of the full model’s KV bytes per token, per variant', async () => {
    const m = await model;
    const perVariant = await Promise.all(
      [fullMask(L), dropMask(L, [0, 2]), dropMask(L, [0, 1, 2, 3])].map(async (mask) => {
        const layout = layoutOf(m, mask);
        const graphs = await DeviceKvGraphs.create(layout, 'cpu');
        const arena = new DeviceKvArena(graphs, 16);
        await arena.addRow('x');
        await arena.addRow('y');
        await arena.reserveTokens(40);
        // Shapes of the tensors that exist, not the formula: rows × capacity × bytes/token.
        const bytes = arena.deviceTensorBytes;
        expect(bytes).toBe(arena.allocatedBytes);
        await graphs.release();
        return {
          kept: layout.keptLayers.length,
          bytesPerToken: bytes / (arena.numRows * arena.tokenCapacity),
        };
      }),
    );
    const full = perVariant[0]!.bytesPerToken;
    expect(full).toBe(kvBytesPerToken(layoutOf(m, fullMask(L))));
    for (const v of perVariant) expect(v.bytesPerToken).toBe((v.kept / L) * full);
  });
});

/**
 * lavapipe compiles each kernel's shaders on first use: about a minute per model with a cold Mesa
 * cache on a busy 2-core machine, then milliseconds. A ceiling for that, not a measurement.
 */
const WEBGPU_TIMEOUT_MS = 600_000;

describe.skipIf(WEBGPU_REASON !== null)(
  `device-resident KV on WebGPU${WEBGPU_REASON ? ` [skipped: ${WEBGPU_REASON}]` : ''}`,
  { timeout: WEBGPU_TIMEOUT_MS },
  () => {
    const model = loadModel({ model: STORIES_260K });
    const L = 5;

    // Compile once, up front: prefill and decode, kept and dropped attention.
    beforeAll(async () => {
      const m = await model;
      const warm = (prefix: string) => [{ id: `${prefix}`, prompt: encode(m, 'Once'), maxTokens: 2 }];
      await runVariants(m, 'webgpu', [
        { mask: fullMask(L), requests: warm('full') },
        { mask: dropMask(L, [1, 3]), requests: warm('pruned') },
      ]);
    }, WEBGPU_TIMEOUT_MS);

    it('stories260K: greedy tokens equal the CPU’s at batch 1, and at batch 8 with a pruned variant mixed in', async () => {
      const m = await model;
      // Batch 1: the four prompts one after another, each alone: 4 × 26 = 104 tokens.
      const alone = STORY_PROMPTS.map((text, i) => ({
        id: `alone${i}`,
        prompt: encode(m, text),
        maxTokens: 26,
        joinAtStep: 26 * i,
      }));
      const [aloneRun] = await runVariants(m, 'webgpu', [{ mask: fullMask(L), requests: alone }]);
      expect(Math.max(...aloneRun!.steps.map((s) => s.batch))).toBe(1);
      await expectVariantsMatchHost(m, [{ mask: fullMask(L), requests: alone }], [aloneRun!]);
      // Batch 8 on the full model and, through the same session at the same time, batch 8 on a
      // pruned variant. (Fixed batch and capacity: few distinct shapes, see WEBGPU_BLOCK_TOKENS.)
      const eight = (prefix: string) =>
        [...STORY_PROMPTS, ...MORE_PROMPTS].map((text, i) => ({
          id: `${prefix}${i}`,
          prompt: encode(m, text),
          maxTokens: 16,
        }));
      const mixed = [
        { mask: fullMask(L), requests: eight('full') },
        { mask: dropMask(L, [1, 3]), requests: eight('pruned') },
      ];
      const results = await runVariants(m, 'webgpu', mixed);
      for (const r of results) expect(Math.max(...r.steps.map((s) => s.batch))).toBe(8);
      await expectVariantsMatchHost(m, mixed, results);
    });

    it('host↔device bytes per decode step do not grow with context (16 vs 400 tokens); with host KV they do', async () => {
      const m = await model;
      const mask = fullMask(L);
      const text = 'Once upon a time, there was a little girl named Lily. She loved to play outside. '.repeat(
        20,
      );
      const long = encode(m, text).slice(0, 400);
      const short = long.slice(0, 16);
      expect(long).toHaveLength(400);
      const [device] = await runVariants(m, 'webgpu', [
        {
          mask,
          requests: [
            { id: 'short', prompt: short, maxTokens: 3 },
            { id: 'long', prompt: long, maxTokens: 3, joinAtStep: 2 },
          ],
        },
      ]);
      // Steps at batch 1: the short request alone (context 16…) and the long one alone (context 400…).
      const alone = device!.steps.filter((s) => s.batch === 1);
      const at16 = alone.find((s) => s.longestContext >= 16 && s.longestContext < 32)!;
      const at400 = alone.find((s) => s.longestContext >= 400)!;
      expect(at16.hostToDeviceBytes).toBeGreaterThan(0);
      expect(at400.hostToDeviceBytes).toBe(at16.hostToDeviceBytes);
      expect(at400.deviceToHostBytes).toBe(at16.deviceToHostBytes);
      // The logits row is all that comes down; up go ids, positions and logits_index (int64), the
      // four [L] masks, seqlens_k and the total length (int32), and the ScatterND indices (kvH × 3 int64).
      expect(at16.deviceToHostBytes).toBe(m.config.vocabSize * 4);
      expect(at16.hostToDeviceBytes).toBe(3 * 8 + 4 * L + 4 + 4 + m.config.numKvHeads * 3 * 8);

      // The host-KV path on the same EP: every step uploads the whole past and fetches the new rows.
      const session = await ModelSession.create(m.config, m.weights, { device: 'webgpu' });
      try {
        const perStep = async (prompt: number[]) => {
          const cache = new JsKvCache(m.config, 1, prompt.length + 1, mask.attnKeep);
          const [logits] = (await runAndCache(session, cache, [prompt], mask)).slice(-1);
          await runAndCache(session, cache, [[argmax(logits!)]], mask);
          return session.transfers.lastRun.hostToDeviceBytes;
        };
        const hostAt16 = await perStep(short);
        const hostAt400 = await perStep(long);
        expect(hostAt400).toBeGreaterThan(10 * hostAt16);
        expect(hostAt16).toBeGreaterThan(at16.hostToDeviceBytes);
      } finally {
        await session.release();
      }
    });

    it('device KV bytes per token are kept/total × the full model’s (tensor shapes on the device)', async () => {
      const m = await model;
      const bytes = await Promise.all(
        [fullMask(L), dropMask(L, [0, 2])].map(async (mask) => {
          const graphs = await DeviceKvGraphs.create(layoutOf(m, mask), 'webgpu');
          const arena = new DeviceKvArena(graphs, 16);
          await arena.addRow('x');
          await arena.reserveTokens(32);
          const out = arena.deviceTensorBytes / arena.tokenCapacity;
          await graphs.release();
          return out;
        }),
      );
      expect(bytes[1]).toBe((3 / 5) * bytes[0]!);
    });

    it.skipIf(missingAssets(TINYSTORIES_656K) !== null)(
      `tinystories-656K: greedy tokens equal the CPU’s at batch 1 and 3 with a pruned variant${missingAssets(TINYSTORIES_656K) ? ` [${missingAssets(TINYSTORIES_656K)}]` : ''}`,
      async () => {
        const m = await loadModel({ model: TINYSTORIES_656K.path });
        const prompts = ['Once upon a time', 'The sun was', 'Tim had a red ball'];
        const variants = [
          { mask: fullMask(2), requests: [{ id: 'alone', prompt: encode(m, prompts[0]!), maxTokens: 24 }] },
          { mask: fullMask(2), requests: staggered(m, prompts, 16, 'full') },
          { mask: dropMask(2, [1]), requests: staggered(m, prompts, 16, 'pruned') },
        ];
        await expectVariantsMatchHost(m, variants, await runVariants(m, 'webgpu', variants));
      },
    );
  },
);
