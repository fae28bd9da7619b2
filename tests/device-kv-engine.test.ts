import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateRequest } from '../engine/client.ts';
import { webGpuUnavailableReason } from '../engine/device.ts';
import { createEngine, type EngineOptions, type InProcessEngine } from '../engine/engine.ts';
import { loadModel } from '../engine/model/load-model.ts';
import { STORIES_260K } from './support/shared-assets.ts';

/**
 * The engine core on a device KV pool (--kv-placement device): the scheduler, preemption and
 * reporting of the host path, with K/V kept in device tensors and changed by the pool's graphs.
 * On the CPU EP the same code runs with tensors in JS memory, so CI checks it on every run; on
 * WebGPU (lavapipe in CI) the tensors are GPU buffers and the bytes crossing per step are counted.
 */
const WEBGPU_REASON = await webGpuUnavailableReason();
const FULL_KV_BYTES_PER_TOKEN = 1280;
const PROMPTS = [
  [1, 403, 407, 261, 378],
  [1, 365, 2009, 290, 261, 1231],
  [1, 1724, 273, 405],
  [1, 5, 12, 28, 301, 410, 290, 11],
];

const request = (id: string, variant: string, prompt: number[], maxTokens: number): GenerateRequest => ({
  requestId: id,
  variant,
  promptTokenIds: prompt.map((t) => t % 512),
  maxTokens,
  ignoreEos: true,
  sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
});

type Alternatives = { tokenId: number; logprob: number }[];

async function tokens(
  engine: InProcessEngine,
  req: GenerateRequest,
  alternatives?: Alternatives[],
): Promise<number[]> {
  const out: number[] = [];
  for await (const event of engine.generate(req)) {
    if (event.type === 'token') {
      out.push(event.tokenId);
      alternatives?.push(event.topLogprobs ?? []);
    } else expect(event.reason, event.error?.message).toBe('length');
  }
  return out;
}

/** Every prompt on the full model and on attn-2, all at once (batches of 4 per variant). */
async function batchedRun(options: Partial<EngineOptions>, maxTokens: number, topLogprobs = 0) {
  const engine = await createEngine({
    model: await loadModel({ model: STORIES_260K }),
    servedModelName: 'stories260K',
    variants: [{ name: 'attn-2', spec: { dropAttention: [1, 3], dropMlp: [] } }],
    ...options,
  });
  try {
    const requests = ['stories260K', 'stories260K:attn-2'].flatMap((variant) =>
      PROMPTS.map((prompt, i) => request(`${variant}-${i}`, variant, prompt, maxTokens)),
    );
    const alternatives = requests.map((): Alternatives[] => []);
    const outputs = await Promise.all(
      requests.map((r, i) => tokens(engine, { ...r, topLogprobs }, alternatives[i])),
    );
    return { outputs, alternatives, variants: engine.variants() };
  } finally {
    await engine.close();
  }
}

describe('engine core on a device KV pool (CPU EP)', () => {
  it('gives the host pool’s greedy tokens for full and pruned variants batched together', async () => {
    const host = await batchedRun({ kvPlacement: 'host' }, 40);
    const device = await batchedRun({ kvPlacement: 'device' }, 40);
    expect(device.outputs).toEqual(host.outputs);
    expect(device.variants.map((v) => v.kvCachePlacement)).toEqual(['device', 'device']);
    expect(host.variants.map((v) => v.kvCachePlacement)).toEqual(['host', 'host']);
    // Kept/total of the full model's bytes per token: 3 of 5 attention layers for attn-2.
    expect(device.variants.map((v) => v.kvBytesPerToken)).toEqual([
      FULL_KV_BYTES_PER_TOKEN,
      (FULL_KV_BYTES_PER_TOKEN * 3) / 5,
    ]);
    // Every buffer was given back when the sequences ended.
    expect(device.variants.every((v) => v.kvCacheBytesAllocated === 0)).toBe(true);
  });

  it('preempts and recomputes on the device pool under a tight budget, with the same tokens', async () => {
    const free = await batchedRun({ kvPlacement: 'device' }, 60);
    // 6 blocks of the full model: far less than 8 sequences of ~70 tokens need.
    const tight = await batchedRun(
      { kvPlacement: 'device', kvCacheBytes: 6 * 16 * FULL_KV_BYTES_PER_TOKEN },
      60,
    );
    expect(tight.outputs).toEqual(free.outputs);
    expect(tight.variants.reduce((sum, v) => sum + v.numPreemptions, 0)).toBeGreaterThan(0);
  });

  it('--kv-dtype fp16 halves bytes per token; greedy tokens leave fp32 only at a near-tie', async () => {
    const fp32 = await batchedRun({ kvPlacement: 'host' }, 40, 2);
    const fp16 = await batchedRun({ kvPlacement: 'device', kvDtype: 'fp16' }, 40);
    expect(fp16.variants.map((v) => v.kvBytesPerToken)).toEqual(
      fp32.variants.map((v) => v.kvBytesPerToken / 2),
    );
    let identical = 0;
    fp16.outputs.forEach((output, i) => {
      const first = output.findIndex((t, k) => t !== fp32.outputs[i]![k]);
      if (first < 0) {
        identical++;
        return;
      }
      // Where fp16 rounding of K/V changes the choice, fp32 had the two candidates within a hair.
      const [best, second] = fp32.alternatives[i]![first]!;
      expect(output[first], `request ${i}: fp16 took fp32's runner-up at token ${first}`).toBe(
        second!.tokenId,
      );
      expect(best!.logprob - second!.logprob, `request ${i}: logit gap at token ${first}`).toBeLessThan(0.05);
    });
    expect(identical).toBeGreaterThanOrEqual(6);
  });

  it('refuses device placement where it cannot serve, saying why', async () => {
    const model = await loadModel({ model: STORIES_260K });
    await expect(
      createEngine({
        model,
        variants: [
          { name: 'auto', spec: { dropAttention: [], dropMlp: [] }, adaptive: { attention: 1, mlp: 0 } },
        ],
        kvPlacement: 'device',
      }),
    ).rejects.toMatchObject({ code: 'DS_UNSUPPORTED', message: expect.stringContaining('adaptive') });
    await expect(createEngine({ model, kvPlacement: 'host', kvDtype: 'fp16' })).rejects.toMatchObject({
      code: 'DS_INVALID_ARGUMENT',
      message: expect.stringContaining('--kv-placement device'),
    });
  });
});

describe.skipIf(WEBGPU_REASON !== null)(
  `engine core with KV on a WebGPU device${WEBGPU_REASON ? ` [skipped: ${WEBGPU_REASON}]` : ''}`,
  { timeout: 600_000 },
  () => {
    it('greedy tokens equal the CPU’s at batch 8 with a pruned variant mixed in (≥ 100 tokens from 4 prompts)', async () => {
      const cpu = await batchedRun({ device: 'cpu' }, 26);
      const gpu = await batchedRun({ device: 'webgpu' }, 26);
      expect(gpu.variants.map((v) => v.kvCachePlacement)).toEqual(['device', 'device']);
      gpu.outputs.forEach((output, i) => {
        const first = output.findIndex((t, k) => t !== cpu.outputs[i]![k]);
        expect(first, `request ${i}: first divergence at token ${first}`).toBe(-1);
      });
    });

    it('fp16 KV on the device: half the bytes per token, the CPU’s greedy tokens', async () => {
      const cpu = await batchedRun({ device: 'cpu' }, 26);
      const gpu = await batchedRun({ device: 'webgpu', kvDtype: 'fp16' }, 26);
      expect(gpu.variants.map((v) => v.kvBytesPerToken)).toEqual(
        cpu.variants.map((v) => v.kvBytesPerToken / 2),
      );
      gpu.outputs.forEach((output, i) => {
        const first = output.findIndex((t, k) => t !== cpu.outputs[i]![k]);
        expect(first, `request ${i}: first divergence at token ${first}`).toBe(-1);
      });
    });

    it('host↔device bytes per decode step do not grow with context (16 vs 400 tokens)', async () => {
      const engine = await createEngine({
        model: await loadModel({ model: STORIES_260K }),
        servedModelName: 'stories260K',
        device: 'webgpu',
      });
      try {
        const perStep = async (promptLength: number) => {
          const before = engine.variants()[0]!.deviceTransfer!;
          const prompt = Array.from({ length: promptLength }, (_, i) => 2 + ((i * 37) % 500));
          await tokens(engine, request(`ctx-${promptLength}`, 'stories260K', prompt, 9));
          const after = engine.variants()[0]!.deviceTransfer!;
          const steps = after.decodeSteps - before.decodeSteps;
          expect(steps).toBe(8); // the first token comes from the prefill
          return {
            up: (after.hostToDeviceBytes - before.hostToDeviceBytes) / steps,
            down: (after.deviceToHostBytes - before.deviceToHostBytes) / steps,
          };
        };
        const short = await perStep(16);
        const long = await perStep(400);
        expect(long).toEqual(short);
        // Up: ids, positions, masks, lengths, scatter indices; down: one logits row (512 × 4 B).
        expect(short.down).toBe(512 * 4);
        expect(short.up).toBeLessThan(1024);
      } finally {
        await engine.close();
      }
    });
  },
);
