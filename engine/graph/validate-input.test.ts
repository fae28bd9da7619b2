import { describe, expect, it } from 'vitest';
import { syntheticConfig } from '../model/synthetic.ts';
import { dropMask } from '../reference/forward.ts';
import type { ForwardInput } from './io.ts';
import { checkForwardInput } from './validate-input.ts';

const config = syntheticConfig({
  dim: 32,
  hiddenDim: 48,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: 64,
  maxSeqLen: 16,
});
const kvSize = (B: number, P: number) => B * config.numKvHeads * P * config.headDim;

function input(overrides: Partial<ForwardInput> = {}): ForwardInput {
  const B = overrides.batchSize ?? 2;
  const S = overrides.seqLen ?? 1;
  const P = overrides.pastCapacity ?? 8;
  const layer = () => ({ key: new Float32Array(kvSize(B, P)), value: new Float32Array(kvSize(B, P)) });
  return {
    batchSize: B,
    seqLen: S,
    inputIds: Array(B * S).fill(1),
    positionIds: Array(B * S).fill(3),
    mask: dropMask(2, [1]),
    pastLengths: Array(B).fill(3),
    past: [layer(), null],
    pastCapacity: P,
    logitsIndex: [0],
    ...overrides,
  };
}

describe('checkForwardInput', () => {
  it('accepts a well-formed decode step', () => {
    expect(() => checkForwardInput(config, input())).not.toThrow();
  });

  it.each<[string, Partial<ForwardInput>, string]>([
    ['ids of the wrong count', { inputIds: [1] }, 'DS_INVALID_ARGUMENT'],
    ['past for a dropped layer', { past: [null, null] }, 'DS_INVALID_ARGUMENT'],
    [
      'several new tokens per row in a batch with past (GQA cannot)',
      { seqLen: 2, inputIds: [1, 1, 1, 1], positionIds: [3, 4, 3, 4] },
      'DS_INVALID_ARGUMENT',
    ],
    ['a past longer than its capacity', { pastLengths: [9, 3] }, 'DS_INVALID_ARGUMENT'],
    ['a logits row outside B·S', { logitsIndex: [2] }, 'DS_INVALID_ARGUMENT'],
    ['positions beyond the context', { pastLengths: [16, 3], pastCapacity: 16 }, 'DS_CONTEXT_OVERFLOW'],
  ])('rejects %s', (_, overrides, code) => {
    expect(() => checkForwardInput(config, input(overrides))).toThrow(expect.objectContaining({ code }));
  });

  it('accepts a chunked prefill with past for a single row', () => {
    expect(() =>
      checkForwardInput(
        config,
        input({ batchSize: 1, seqLen: 3, inputIds: [1, 2, 3], positionIds: [3, 4, 5], pastLengths: [3] }),
      ),
    ).not.toThrow();
  });
});
