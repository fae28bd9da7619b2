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

  it('adaptive:attn:K[,mlp:M] becomes an adaptive variant that drops nothing fixed', () => {
    const resolved = resolveVariantArgs(
      ['auto=adaptive:attn:2', 'mixed=adaptive:attn:1,mlp:1', 'm=adaptive:mlp:3'].map(parseVariantFlag),
      config,
    );
    const none = { dropAttention: [], dropMlp: [] };
    expect(resolved).toEqual([
      { name: 'auto', spec: none, adaptive: { attention: 2, mlp: 0 } },
      { name: 'mixed', spec: none, adaptive: { attention: 1, mlp: 1 } },
      { name: 'm', spec: none, adaptive: { attention: 0, mlp: 3 } },
    ]);
  });

  it.each([
    ['x=adaptive:attn:4', /--variant x: .*attn:4 would drop every layer; this model has 4/],
    ['x=adaptive:attn:0', /--variant x: .*drops nothing/],
    ['x=adaptive:heads:1', /--variant x: .*expected adaptive:attn:K/],
    ['x=adaptive:attn:-1', /--variant x: .*expected adaptive:attn:K/],
    ['x=adaptive:attn:1.5', /--variant x: .*expected adaptive:attn:K/],
  ])('rejects %s with a clear error', (flag, message) => {
    expect(() => resolveVariantArgs([parseVariantFlag(flag)], config)).toThrow(message);
  });
});
