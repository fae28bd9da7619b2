import { describe, expect, it } from 'vitest';
import { syntheticConfig } from '../../engine/model/synthetic.ts';
import { parseByteSize } from './byte-size.ts';
import { parseVariantFlag, resolveVariantArgs } from './variant-flag.ts';

describe('parseByteSize', () => {
  it.each([
    ['1048576', 1048576],
    ['512MiB', 512 * 1024 ** 2],
    ['2GB', 2e9],
    ['1.5GiB', 1.5 * 1024 ** 3],
    ['64k', 65536],
    ['10 MB', 1e7],
  ])('%s → %d', (text, bytes) => {
    expect(parseByteSize(text)).toBe(bytes);
  });

  it.each(['', 'lots', '-5MB', '0', '5XB'])('rejects %j', (text) => {
    expect(() => parseByteSize(text)).toThrow(RangeError);
  });
});

describe('--variant', () => {
  const config = syntheticConfig({ numLayers: 4 });

  it('parses NAME=SPEC and resolves inline specs against the model', () => {
    const arg = parseVariantFlag('attn-2=attn:1,3;mlp:0');
    expect(arg).toEqual({ name: 'attn-2', spec: 'attn:1,3;mlp:0' });
    expect(resolveVariantArgs([arg], config)).toEqual([
      { name: 'attn-2', spec: { dropAttention: [1, 3], dropMlp: [0] } },
    ]);
  });

  it('rejects bad names, duplicates, and layers the model does not have', () => {
    expect(() => parseVariantFlag('attn:1')).toThrow(/NAME=SPEC/);
    expect(() => parseVariantFlag('a b=attn:1')).toThrow(/NAME=SPEC/);
    const twice = [parseVariantFlag('x=attn:1'), parseVariantFlag('x=attn:2')];
    expect(() => resolveVariantArgs(twice, config)).toThrow(/twice/);
    expect(() => resolveVariantArgs([parseVariantFlag('x=attn:9')], config)).toThrow(/layer 9/);
    expect(() => resolveVariantArgs([parseVariantFlag('x=missing-plan.json')], config)).toThrow(
      /missing-plan.json/,
    );
  });
});
