import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const tscBin = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url));

describe('k6 scripts', () => {
  // k6 runs the TypeScript directly; this is what catches a wrong k6 API before anyone runs them.
  it('type-check against @types/k6 and the xk6-sse declaration', async () => {
    const result = await promisify(execFile)(
      process.execPath,
      [tscBin, '-p', 'loadtests/k6/tsconfig.json', '--noEmit', '--listFilesOnly'],
      { cwd: repoRoot },
    );
    // The three scripts and the extension types are in the program, and @types/k6 is what resolves k6/*.
    for (const file of ['completions.ts', 'chat-stream.ts', 'grpc-generate.ts', 'types/xk6-sse.d.ts']) {
      expect(result.stdout).toContain(`loadtests/k6/${file}`);
    }
    expect(result.stdout).toMatch(/@types\/k6\/net\/grpc\/index\.d\.ts/);

    const check = await promisify(execFile)(
      process.execPath,
      [tscBin, '-p', 'loadtests/k6/tsconfig.json', '--noEmit'],
      {
        cwd: repoRoot,
      },
    ).then(
      (r) => ({ code: 0, output: r.stdout + r.stderr }),
      (e: { code?: number; stdout?: string; stderr?: string }) => ({
        code: e.code ?? -1,
        output: `${e.stdout ?? ''}${e.stderr ?? ''}`,
      }),
    );
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
  });
});
