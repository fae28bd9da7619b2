import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../bin/dropserve.js', import.meta.url));
const run = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-convert-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function dropserve(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { cwd: tmp });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const failed = e as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe('dropserve convert --to gguf (process)', () => {
  it('writes the built-in model as Q4_0 GGUF that generate then runs, and refuses to overwrite it', async () => {
    const out = path.join(tmp, 'stories260K-q4_0.gguf');
    const converted = await dropserve(['convert', '--to', 'gguf', '--type', 'q4_0', '--out', out]);
    expect(converted.code).toBe(0);
    expect(converted.stdout).toMatch(
      /^wrote .*stories260K-q4_0\.gguf: GGUF stories260K, \d+ KiB, tensors Q4_0 ×31, F32 ×11, F16 ×5\n$/,
    );
    const again = await dropserve(['convert', '--to', 'gguf', '--out', out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/\[DS_INVALID_ARGUMENT\] .* exists \(pass --force to overwrite it\)/);

    const generated = await dropserve([
      'generate',
      '--model',
      out,
      '--weights',
      'int4',
      '--prompt',
      'Once upon a time',
      '--max-tokens',
      '8',
      '--json',
    ]);
    expect(generated.code).toBe(0);
    const result = JSON.parse(generated.stdout) as {
      text: string;
      completion_tokens: number[];
      weight_format: string;
    };
    // --weights int4 keeps the file's Q4_0 blocks as the MatMulNBits matrices.
    expect(result.weight_format).toBe('int4');
    expect(result.completion_tokens).toHaveLength(8);
    expect(result.text).toMatch(/^, there was a/);

    const badType = await dropserve([
      'convert',
      '--to',
      'gguf',
      '--type',
      'q5_k',
      '--out',
      path.join(tmp, 'x.gguf'),
    ]);
    expect(badType.code).toBe(1);
    expect(badType.stderr).toMatch(/--type must be one of f32, f16, q8_0, q4_0, got "q5_k"/);
  });
});
