import { spawn } from 'node:child_process';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseServeArgs } from '../cli/serve.ts';

const BIN = fileURLToPath(new URL('../bin/dropserve.js', import.meta.url));
const SHIPPED_MODEL = fileURLToPath(new URL('../models/stories260K/stories260K.bin', import.meta.url));

/** `dropserve serve`: flag parsing, and the real process from start-up log to SIGTERM exit. */
describe('parseServeArgs', () => {
  it('maps every flag onto the server options', () => {
    const config = parseServeArgs(
      [
        '--model',
        'm.bin',
        '--tokenizer',
        'tok.bin',
        '--served-model-name',
        'story',
        '--host',
        '127.0.0.1',
        '--port',
        '9000',
        '--grpc-port',
        '0',
        '--variant',
        'attn-2=attn:1,3',
        '--variant',
        'lean=plans/lean.json',
        '--kv-cache-bytes',
        '512MiB',
        '--max-queue',
        '8',
        '--api-key',
        'k',
        '--threads',
        '2',
        '--device',
        'cpu',
        '--max-body-bytes',
        '1MB',
        '--log-level',
        'debug',
        '--shutdown-grace-ms',
        '1500',
      ],
      {},
    );
    if (config === 'help') throw new Error('unexpected help');
    expect(config.logLevel).toBe('debug');
    expect(config.shutdownGraceMs).toBe(1500);
    expect(config.server).toMatchObject({
      model: 'm.bin',
      tokenizer: 'tok.bin',
      servedModelName: 'story',
      host: '127.0.0.1',
      port: 9000,
      grpcPort: 0,
      variants: [
        { name: 'attn-2', spec: 'attn:1,3' },
        { name: 'lean', spec: 'plans/lean.json' },
      ],
      kvCacheBytes: 512 * 1024 * 1024,
      maxQueue: 8,
      apiKey: 'k',
      threads: 2,
      device: 'cpu',
      maxBodyBytes: 1_000_000,
    });
  });

  it('defaults: 0.0.0.0:8000, gRPC 50051, 4 MiB bodies, API key from DROPSERVE_API_KEY', () => {
    const config = parseServeArgs([], { DROPSERVE_API_KEY: 'from-env' });
    if (config === 'help') throw new Error('unexpected help');
    expect(config.server).toMatchObject({
      host: '0.0.0.0',
      port: 8000,
      grpcPort: 50051,
      maxBodyBytes: 4 * 1024 * 1024,
      apiKey: 'from-env',
    });
    expect(parseServeArgs(['--help'])).toBe('help');
  });

  it.each([
    [['--port', '70000'], '--port'],
    [['--kv-cache-bytes', 'lots'], '--kv-cache-bytes'],
    [['--device', 'tpu'], '--device'],
    [['--log-level', 'loud'], '--log-level'],
    [['--variant', 'no-equals-sign'], '--variant'],
    [['--frobnicate'], 'frobnicate'],
  ])('rejects %j naming the flag', (argv, flag) => {
    expect(() => parseServeArgs(argv, {})).toThrow(flag);
  });
});

describe('dropserve serve (process)', () => {
  it('with no --model serves the built-in stories260K from any cwd; logs JSON lines; exits 0 on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      [BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--grpc-port', '0', '--variant', 'a2=attn:1,3'],
      // Another working directory: the default model is found beside the package, not the cwd.
      { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() },
    );
    const lines: Record<string, unknown>[] = [];
    const serving = new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const entry = JSON.parse(line) as Record<string, unknown>;
        lines.push(entry);
        if (typeof entry.http === 'string') resolve(entry.http);
      });
      child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const url = await serving;
      expect((await fetch(`${url}/health`)).status).toBe(200);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as {
        data: { id: string; root: string; dropserve_source: { kind: string; built_in: boolean } }[];
      };
      expect(models.data.map((m) => m.id)).toEqual(['stories260K', 'stories260K:a2']);
      expect(models.data[0]).toMatchObject({
        root: SHIPPED_MODEL,
        dropserve_source: { kind: 'llama2c', built_in: true },
      });
      const completion = (await (
        await fetch(`${url}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            model: 'stories260K',
            prompt: 'Once upon a time',
            max_tokens: 12,
            temperature: 0,
          }),
        })
      ).json()) as { choices: { text: string }[] };
      expect(completion.choices[0]!.text).toBe(', there was a little girl named Lily. She');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    const messages = lines.map((l) => String(l.msg));
    expect(messages.some((m) => m.includes('serving the built-in default stories260K'))).toBe(true);
    // 3 of 5 attention layers keep a cache: 3 × 2 (K, V) × 4 kv heads × 8 dims × 4 bytes.
    expect(lines.find((l) => l.variant === 'stories260K:a2')?.kvBytesPerToken).toBe(768);
    expect(messages).toContain('shut down');
  });
});
