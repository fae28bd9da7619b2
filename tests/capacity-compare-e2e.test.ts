import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runLoadtestCommand } from '../cli/loadtest.ts';
import type { CapacityComparison } from '../loadtests/src/capacity-compare.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { e2eServerOptions } from './support/test-server.ts';

/**
 * `dropserve loadtest capacity --url A,B` against two real servers with one KV budget, one reserving
 * every sequence's worst case (--kv-admission worst-case) and one taking KV on demand: one run of the
 * tool sweeps both with the same traffic (max_tokens 256, stopping at the first newline as a dataset
 * stop string) and prints users at the SLO per variant side by side, labelled by the servers'
 * kv_admission. What the numbers are is the docs' business (docs/capacity.md); this checks the wiring
 * and the bounds the budget sets whatever the timing.
 */

const FULL_KV_BYTES_PER_TOKEN = 1280;
const MAX_TOKENS = 256;
/** Two worst cases of the full model (a ≤ 16-token prompt + 256, in 16-token blocks). */
const BUDGET_BYTES = 2 * 272 * FULL_KV_BYTES_PER_TOKEN;
const MODELS = ['stories260K', 'stories260K:attn-4'];
const REQUESTS = 8;

let worstCase: RunningServer;
let onDemand: RunningServer;
let dir: string;

beforeAll(async () => {
  const serve = (kvAdmission: 'worst-case' | 'on-demand'): Promise<RunningServer> =>
    startServer(
      e2eServerOptions('stories260K', {
        kvCacheBytes: BUDGET_BYTES,
        kvAdmission,
        variants: [{ name: 'attn-4', spec: 'attn:1,2,3,4' }],
      }),
    );
  [worstCase, onDemand] = await Promise.all([serve('worst-case'), serve('on-demand')]);
  dir = await mkdtemp(join(tmpdir(), 'dropserve-capacity-compare-'));
}, 60_000);

afterAll(async () => {
  await Promise.all([worstCase?.close(0), onDemand?.close(0)]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('loadtest capacity across servers (stories260K, worst-case vs on-demand, one budget)', () => {
  it('sweeps both servers in one run and prints users at the SLO side by side', async () => {
    const dataset = join(dir, 'stories.jsonl');
    await writeFile(
      dataset,
      ['Once upon a time', 'Lily and Tom went to the park.', 'One day, a little bird']
        .map((prompt) => JSON.stringify({ prompt, max_tokens: MAX_TOKENS, stop: '\n' }))
        .join('\n'),
    );
    const json = join(dir, 'compare.json');
    const chart = join(dir, 'compare.svg');
    const printed: string[] = [];
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
      printed.push(args.join(' '));
    });
    vi.spyOn(console, 'error').mockImplementation(() => {});
    let code: number;
    try {
      code = await runLoadtestCommand([
        'capacity',
        '--url',
        `${worstCase.httpUrl},${onDemand.httpUrl}`,
        '--models',
        MODELS.join(','),
        '--dataset',
        dataset,
        '--respect-eos',
        '--slo',
        'ttft_ms:60000',
        '--levels',
        '4',
        '--requests-per-level',
        String(REQUESTS),
        '--warmup',
        '0',
        '--saturation-gain=-1',
        '--json',
        json,
        '--chart',
        chart,
        '--quiet',
      ]);
    } finally {
      vi.restoreAllMocks();
    }
    expect(code).toBe(0);
    const text = printed.join('\n');
    expect(text).toContain(`server worst-case: ${worstCase.httpUrl}`);
    expect(text).toContain(`server on-demand: ${onDemand.httpUrl}`);
    expect(text).toMatch(/variant\s+users worst-case\s+users on-demand\s+on-demand \/ worst-case/);
    expect(text).not.toContain('warning:');

    const comparison = JSON.parse(await readFile(json, 'utf8')) as CapacityComparison;
    expect(comparison.servers.map((s) => [s.label, s.kvAdmission, s.kvBudgetBytes, s.kvBlockTokens])).toEqual(
      [
        ['worst-case', 'worst-case', BUDGET_BYTES, 16],
        ['on-demand', 'on-demand', BUDGET_BYTES, 16],
      ],
    );
    expect(comparison.warnings).toEqual([]);
    for (const server of comparison.servers) {
      expect(server.report.variants.map((v) => v.model)).toEqual(MODELS);
      for (const v of server.report.variants) {
        const level = v.levels[0]!;
        expect(level.summary.failed, `${server.label} ${v.model}`).toBe(0);
        expect(level.summary.completed).toBe(REQUESTS);
        // The dataset's stop string ends every story's first paragraph long before max_tokens.
        expect(level.summary.totalOutputTokens).toBeLessThan((REQUESTS * MAX_TOKENS) / 2);
        expect(level.preemptions).not.toBeNull();
      }
    }
    // Whatever the timing, reserving 256-token worst cases never runs more than the budget holds.
    const reserved = comparison.servers[0]!.report.variants[0]!;
    expect(reserved.maxRunningObserved).toBeLessThanOrEqual(2);
    expect(comparison.servers[0]!.report.variants.every((v) => v.levels[0]!.preemptions === 0)).toBe(true);
    expect(await readFile(chart, 'utf8')).toContain('stories260K (on-demand)');
  });
});
