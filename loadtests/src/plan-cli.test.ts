import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runLoadtestCommand } from '../../cli/loadtest.ts';
import type { CapacityPlan } from './plan.ts';

/**
 * `dropserve loadtest plan` as a command: flags, files, exit status. The arithmetic is in
 * plan.test.ts; a plan on a freshly measured report is in tests/plan-e2e.test.ts.
 */
const OLD_REPORT = fileURLToPath(new URL('../../docs/capacity.json', import.meta.url));

let dir: string;
const printed: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dropserve-plan-cli-'));
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void printed.push(args.join(' ')));
  vi.spyOn(console, 'error').mockImplementation(() => {});
});
afterAll(async () => {
  vi.restoreAllMocks();
  await rm(dir, { recursive: true, force: true });
});

describe('dropserve loadtest plan', () => {
  it('reads a report written before agreement was recorded; --mix FILE uses the mean max_tokens', async () => {
    const mix = join(dir, 'mix.jsonl');
    await writeFile(
      mix,
      '{"prompt":"a","max_tokens":100}\n{"messages":[{"role":"user","content":"b"}],"max_tokens":300}\n',
    );
    const out = join(dir, 'plan.json');
    const args = ['plan', '--capacity', OLD_REPORT, '--target-rps', '20', '--mix', mix, '--json', out];
    expect(await runLoadtestCommand(args)).toBe(0);
    const plan = JSON.parse(await readFile(out, 'utf8')) as CapacityPlan;
    expect(plan.config.mix).toEqual({
      meanOutputTokens: 200,
      meanInputTokens: null,
      source: `file ${mix} (2 lines)`,
    });
    // The report measured 448-token outputs: capacity scales by 448 / 200.
    for (const v of plan.variants) expect(v.mixScale).toBeCloseTo(448 / 200, 12);
    expect(plan.approximation).toMatch(/decode dominates/);
    expect(plan.variants.map((v) => v.agreement)).toEqual([1, null, null]);
    expect(printed.join('\n')).toContain('approximation: per-replica capacity rescaled');
  });

  it('exits 1 when no variant clears the bar, naming why', async () => {
    const args = ['plan', '--capacity', OLD_REPORT, '--target-rps', '20', '--min-agreement', '0.9'];
    const overrides = ['--agreement', 'stories260K=0.5', '--agreement', 'stories260K:attn-2=0.8'];
    expect(await runLoadtestCommand([...args, ...overrides])).toBe(1);
    expect(printed.at(-1)).toMatch(
      /choice: no variant meets p90 TTFT ≤ 150 ms, p90 TPOT ≤ 20 ms with agreement ≥ 0\.9/,
    );
    expect(printed.at(-1)).toMatch(/stories260K:attn-4 agreement unknown/);
  });

  it('explains bad flags and files', async () => {
    await expect(runLoadtestCommand(['plan', '--target-rps', '1'])).rejects.toThrow(/--capacity is required/);
    await expect(runLoadtestCommand(['plan', '--capacity', OLD_REPORT])).rejects.toThrow(
      /--target-rps is required/,
    );
    const base = ['plan', '--capacity', OLD_REPORT, '--target-rps', '1'];
    await expect(runLoadtestCommand([...base, '--headroom', '1.5'])).rejects.toThrow(
      /--headroom: expected a share in \(0, 1\]/,
    );
    await expect(runLoadtestCommand([...base, '--replica-cost', 'cheap'])).rejects.toThrow(/--replica-cost/);
    await expect(runLoadtestCommand([...base, '--agreement', 'nope=1'])).rejects.toThrow(
      /--agreement nope: not in the report/,
    );
    await expect(runLoadtestCommand([...base, '--mix', 'output=0'])).rejects.toThrow(/--mix/);
    const noMaxTokens = join(dir, 'no-max.jsonl');
    await writeFile(noMaxTokens, '{"prompt":"a"}\n');
    await expect(runLoadtestCommand([...base, '--mix', noMaxTokens])).rejects.toThrow(
      /every line needs "max_tokens"/,
    );
    const missing = join(dir, 'missing.json');
    await expect(runLoadtestCommand(['plan', '--capacity', missing, '--target-rps', '1'])).rejects.toThrow(
      /--capacity .*missing\.json: cannot read a JSON report/,
    );
    const partial = join(dir, 'partial.json');
    const report = JSON.parse(await readFile(OLD_REPORT, 'utf8')) as {
      variants: { levels: { summary: Record<string, unknown> }[] }[];
    };
    delete report.variants[0]!.levels[0]!.summary.requestThroughput;
    await writeFile(partial, JSON.stringify(report));
    await expect(runLoadtestCommand(['plan', '--capacity', partial, '--target-rps', '1'])).rejects.toThrow(
      /partial\.json: variants\.0\.levels\.0\.summary\.requestThroughput: .*loadtest capacity/,
    );
    expect(await runLoadtestCommand(['plan', '--help'])).toBe(0);
    expect(printed.at(-1)).toContain('usage: dropserve loadtest plan');
  });
});
