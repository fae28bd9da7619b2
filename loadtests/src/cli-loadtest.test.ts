import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDurationS, runLoadtestCommand } from '../../cli/loadtest.ts';
import { useCliHarness } from './testing/cli-harness.ts';
import { startFakeUpstream } from './testing/fake-upstream.ts';

const cli = useCliHarness('dropserve-loadtest-');

describe('dropserve loadtest (CLI)', () => {
  it('runs against a server, prints the report, writes JSON and compares with a baseline', async () => {
    cli.upstream = await startFakeUpstream({
      plan: () => ({ kind: 'stream', ttftMs: 20, itlMs: 5, chunks: 4 }),
    });
    const jsonPath = join(cli.dir, 'run.json');
    const args = [
      '--url',
      cli.upstream.baseUrl,
      '--concurrency',
      '2',
      '--requests',
      '6',
      '--output-len',
      '4',
    ];
    const code = await runLoadtestCommand([
      ...args,
      '--model',
      'm',
      '--slo',
      'ttft_ms:5000',
      '--json',
      jsonPath,
    ]);
    expect(code).toBe(0);
    const text = cli.printed.join('\n');
    expect(text).toContain('dropserve loadtest');
    expect(text).toMatch(/Successful requests\s+6/);
    expect(text).toMatch(/Goodput \(req\/s\)\s+[\d.]+ {2}\(6\/6 requests met the SLO\)/);
    const report = JSON.parse(await readFile(jsonPath, 'utf8'));
    expect(report.summary.completed).toBe(6);
    expect(report.requests).toHaveLength(6);
    expect(report.config).toMatchObject({
      model: 'm',
      concurrency: 2,
      mode: 'closed',
      slo: { ttftMs: 5000 },
    });

    // No --model: the first id from /v1/models is not available on this fake, so it says so.
    await expect(runLoadtestCommand(args)).rejects.toThrow(/--model not given/);

    cli.printed.length = 0;
    expect(await runLoadtestCommand([...args, '--model', 'm', '--baseline', jsonPath])).toBe(0);
    expect(cli.printed.join('\n')).toMatch(/request throughput \(req\/s\)\s+[\d.]+\s+[\d.]+\s+[\d.]+×/);
  });

  it('returns 1 when every request failed', async () => {
    cli.upstream = await startFakeUpstream({ plan: () => ({ kind: 'error', status: 503 }) });
    const code = await runLoadtestCommand(['--url', cli.upstream.baseUrl, '--model', 'm', '--requests', '2']);
    expect(code).toBe(1);
    expect(cli.printed.join('\n')).toContain('http_503 ×2');
  });

  it('runs a capacity sweep and writes the chart', async () => {
    cli.upstream = await startFakeUpstream({
      // Median TTFT 85, 110, then 160 ms at 1, 2, 4 users: the 150 ms SLO breaks at 4.
      plan: ({ inFlight }) => ({ kind: 'stream', ttftMs: 60 + 25 * inFlight, itlMs: 5, chunks: 2 }),
    });
    const chartPath = join(cli.dir, 'capacity.svg');
    const code = await runLoadtestCommand([
      'capacity',
      ...['--url', cli.upstream.baseUrl, '--models', 'm', '--slo', 'ttft_ms:150', '--slo-percentile', '50'],
      ...[
        '--start',
        '1',
        '--max',
        '8',
        '--requests-per-level',
        '8',
        '--warmup',
        '1',
        '--chart',
        chartPath,
        '--quiet',
        '--saturation-gain=-1', // this test is about the SLO, not saturation
      ],
    ]);
    expect(code).toBe(0);
    const text = cli.printed.join('\n');
    expect(text).toContain('dropserve capacity');
    expect(text).toMatch(/m\s+2\s+[\d.]+\s+[\d.]+\s+SLO broken at 4/);
    expect(await readFile(chartPath, 'utf8')).toContain('<path class="series" data-series="m"');
  });

  it('explains bad flags instead of running', async () => {
    await expect(runLoadtestCommand(['--nope'])).rejects.toThrow(/Unknown option '--nope'.*--help/);
    await expect(runLoadtestCommand(['--model', 'm', '--concurrency', 'two'])).rejects.toThrow(
      /--concurrency: expected a number, found 'two'/,
    );
    await expect(runLoadtestCommand(['--model', 'm', '--slo', 'ttft:fast'])).rejects.toThrow(/--slo/);
    await expect(runLoadtestCommand(['--model', 'm', '--endpoint', 'embeddings'])).rejects.toThrow(
      /--endpoint/,
    );
    await expect(runLoadtestCommand(['capacity', '--slo', 'ttft_ms:1'])).rejects.toThrow(
      /--models is required/,
    );
    await expect(runLoadtestCommand(['capacity', '--models', 'm'])).rejects.toThrow(/--slo is required/);
    const badDataset = join(cli.dir, 'bad.jsonl');
    await writeFile(badDataset, '{"prompt": "ok"}\n{"messages": [{"role": "user", "content": "hi"}]}\n');
    await expect(
      runLoadtestCommand(['--model', 'm', '--url', 'http://127.0.0.1:9', '--dataset', badDataset]),
    ).rejects.toThrow(/bad.jsonl:2: a \{messages\} line needs --endpoint chat/);
    expect(await runLoadtestCommand(['--help'])).toBe(0);
    expect(await runLoadtestCommand(['capacity', '--help'])).toBe(0);
    expect(cli.printed.join('\n')).toContain('usage: dropserve loadtest capacity');
  });

  it('parses durations', () => {
    expect(parseDurationS('d', '90')).toBe(90);
    expect(parseDurationS('d', '90s')).toBe(90);
    expect(parseDurationS('d', '1.5m')).toBe(90);
    expect(parseDurationS('d', '250ms')).toBe(0.25);
    expect(() => parseDurationS('d', 'soon')).toThrow(/--d: expected a duration/);
    expect(() => parseDurationS('d', '0')).toThrow(/longer than zero/);
  });
});
