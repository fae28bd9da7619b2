import { describe, expect, it } from 'vitest';
import { parseServeArgs, SERVE_USAGE } from './serve.ts';

/** `dropserve serve --kv-block-tokens N --kv-admission on-demand|worst-case --kv-watermark F`. */
describe('serve KV memory flags', () => {
  const serverOptions = (argv: string[]) => {
    const config = parseServeArgs(argv, {});
    if (config === 'help') throw new Error('unexpected help');
    return config.server;
  };

  it('map onto the server options', () => {
    expect(
      serverOptions(['--kv-block-tokens', '32', '--kv-admission', 'worst-case', '--kv-watermark', '0.05']),
    ).toMatchObject({ kvBlockTokens: 32, kvAdmission: 'worst-case', kvWatermark: 0.05 });
    expect(serverOptions(['--kv-block-tokens', '1024', '--kv-watermark', '0'])).toMatchObject({
      kvBlockTokens: 1024,
      kvWatermark: 0,
    });
    expect(serverOptions(['--kv-placement', 'device', '--kv-dtype', 'fp16'])).toMatchObject({
      kvPlacement: 'device',
      kvDtype: 'fp16',
    });
  });

  it('stay unset when not given: the engine applies its defaults', () => {
    const options = serverOptions([]);
    expect(options.kvBlockTokens).toBeUndefined();
    expect(options.kvAdmission).toBeUndefined();
    expect(options.kvWatermark).toBeUndefined();
  });

  it.each([
    [['--kv-block-tokens', '0'], '--kv-block-tokens must be an integer in 1..1024, got "0"'],
    [['--kv-block-tokens', '1025'], '--kv-block-tokens must be an integer in 1..1024'],
    [['--kv-block-tokens', '16.5'], '--kv-block-tokens must be an integer'],
    [['--kv-block-tokens=-16'], '--kv-block-tokens must be an integer'],
    [['--kv-block-tokens', 'lots'], '--kv-block-tokens must be an integer'],
    [['--kv-admission', 'lazy'], '--kv-admission must be one of on-demand, worst-case, got "lazy"'],
    [['--kv-watermark', '0.5'], '--kv-watermark must be a number with 0 ≤ F < 0.5, got "0.5"'],
    [['--kv-watermark=-0.1'], '--kv-watermark must be a number with 0 ≤ F < 0.5'],
    [['--kv-watermark', ''], '--kv-watermark must be a number'],
    [['--kv-watermark', 'NaN'], '--kv-watermark must be a number'],
    [['--kv-placement', 'gpu'], '--kv-placement must be one of host, device, got "gpu"'],
    [['--kv-dtype', 'bf16'], '--kv-dtype must be one of fp32, fp16, got "bf16"'],
  ])('rejects %j with a message naming the flag', (argv, message) => {
    expect(() => parseServeArgs(argv, {})).toThrow(message);
  });

  it('are documented in --help', () => {
    for (const flag of [
      '--kv-block-tokens N',
      '--kv-admission on-demand|worst-case',
      '--kv-watermark F',
      '--kv-placement host|device',
      '--kv-dtype fp32|fp16',
    ]) {
      expect(SERVE_USAGE).toContain(flag);
    }
  });
});
