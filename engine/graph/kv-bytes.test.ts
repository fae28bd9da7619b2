import { describe, expect, it } from 'vitest';
import { kvBytesPerToken as poolBytesPerToken } from '../../kv-cache/kv-layout.ts';
import { syntheticConfig } from '../model/synthetic.ts';
import { dropMask } from '../reference/forward.ts';
import { kvBytesPerToken, kvLayoutOf } from './kv-bytes.ts';

describe('kvBytesPerToken', () => {
  const config = syntheticConfig({ numLayers: 5, numHeads: 8, numKvHeads: 4, dim: 128 }); // headDim 16

  it('is 2 × layers × kvHeads × headDim × 4 for the full model', () => {
    expect(kvBytesPerToken(config, [])).toBe(2 * 5 * 4 * 16 * 4);
  });

  it('with attention {1,3} of 5 dropped is exactly 3/5 of the full model', () => {
    const full = kvBytesPerToken(config, []);
    expect(kvBytesPerToken(config, [1, 3])).toBe((full * 3) / 5);
    expect(kvBytesPerToken(config, dropMask(5, [1, 3], [0, 2]))).toBe((full * 3) / 5);
  });

  it('counts a repeated layer once and rejects layers the model lacks', () => {
    expect(kvBytesPerToken(config, [2, 2])).toBe(kvBytesPerToken(config, [2]));
    expect(() => kvBytesPerToken(config, [5])).toThrow(RangeError);
    expect(() => kvBytesPerToken(config, dropMask(4, [1]))).toThrow(RangeError);
  });

  it('is what the KV pools allocate by: the layout of the kept attention layers', () => {
    const layout = kvLayoutOf(config, [1, 3]);
    expect(layout).toEqual({
      keptLayers: [0, 2, 4],
      numKvHeads: 4,
      headDim: 16,
      maxSeqLen: config.maxSeqLen,
    });
    expect(kvLayoutOf(config, dropMask(5, [3, 1])).keptLayers).toEqual([0, 2, 4]);
    expect(kvBytesPerToken(config, [1, 3])).toBe(poolBytesPerToken(layout));
  });
});
