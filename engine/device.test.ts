import { describe, expect, it } from 'vitest';
import { executionProvidersFor, parseDevice } from './device.ts';
import { isDropserveError } from './errors.ts';
import { ModelSession } from './graph/model-session.ts';
import { JsKvCache, maxAbsDiff, runAndCache } from './graph/testing/js-kv-cache.ts';
import { syntheticConfig, syntheticWeights } from './model/synthetic.ts';
import { fullMask } from './reference/forward.ts';

describe('device selection', () => {
  it('parses --device and rejects anything else with a coded error', () => {
    expect(parseDevice('webgpu')).toBe('webgpu');
    expect(() => parseDevice('tpu')).toThrow(expect.objectContaining({ code: 'DS_INVALID_ARGUMENT' }));
  });

  it('maps devices to execution providers without a silent CPU fallback', () => {
    expect(executionProvidersFor('cpu')).toEqual(['cpu']);
    expect(executionProvidersFor('cuda')).toEqual([{ name: 'cuda', deviceId: 0 }]);
    expect(executionProvidersFor('webgpu')).toEqual([{ name: 'webgpu' }]);
  });

  const config = syntheticConfig({
    dim: 32,
    hiddenDim: 48,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: 64,
    maxSeqLen: 32,
  });
  const weights = syntheticWeights(config, 3);

  // Where the GPU is present the session must give CPU's answer; where it is not, a coded error
  // that says what is missing. Both outcomes are checked.
  it.each([
    ['cuda', /CUDA 12/],
    ['webgpu', /Vulkan/],
  ] as const)(
    '%s: runs like the CPU, or fails with DS_DEVICE_UNAVAILABLE naming what is missing',
    async (device, missing) => {
      const mask = fullMask(2);
      let session: ModelSession;
      try {
        session = await ModelSession.create(config, weights, { device });
      } catch (e) {
        expect(isDropserveError(e) && e.code).toBe('DS_DEVICE_UNAVAILABLE');
        expect((e as Error).message).toMatch(missing);
        return;
      }
      const cpu = await ModelSession.create(config, weights);
      try {
        const [onDevice] = await runAndCache(
          session,
          new JsKvCache(config, 1, 8, mask.attnKeep),
          [[1, 2, 3]],
          mask,
        );
        const [onCpu] = await runAndCache(cpu, new JsKvCache(config, 1, 8, mask.attnKeep), [[1, 2, 3]], mask);
        expect(maxAbsDiff(onDevice!, onCpu!)).toBeLessThan(1e-3);
      } finally {
        await session.release();
        await cpu.release();
      }
    },
  );
});
