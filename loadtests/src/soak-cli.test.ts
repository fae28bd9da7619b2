import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runLoadtestCommand } from '../../cli/loadtest.ts';
import { runSoak, type SoakReport } from './soak.ts';
import { useCliHarness } from './testing/cli-harness.ts';
import { type FakeUpstream, startFakeUpstream } from './testing/fake-upstream.ts';

/**
 * The soak's failure side. A real dropserve cannot be made to send a broken stream on demand, so a
 * scripted OpenAI server on 127.0.0.1 answers request i in one of four ways: a 503 error, a stream
 * without [DONE], a stream whose usage disagrees with its finish reason, or a correct stream. With
 * one worker the server's arrival order is the soak's issue order, so the counts are exact.
 */

const cli = useCliHarness('dropserve-soak-cli-');

async function startScriptedUpstream(): Promise<FakeUpstream> {
  return startFakeUpstream({
    plan: ({ index, body }) => {
      const chunks = Number(body.max_tokens);
      const stream = { kind: 'stream', ttftMs: 0, itlMs: 0, chunks } as const;
      switch (index % 4) {
        case 0:
          return { kind: 'error', status: 503, message: 'scripted overload' };
        case 1:
          return { ...stream, omitDone: true };
        case 2:
          return { ...stream, usageCompletionTokens: chunks - 1 };
        default:
          return stream;
      }
    },
  });
}

const args = (baseUrl: string, jsonPath: string, extra: string[] = []): string[] => [
  'soak',
  '--url',
  baseUrl,
  '--variants',
  'm',
  '--requests',
  '8',
  '--concurrency',
  '1',
  '--stream-share',
  '1',
  '--abort-share',
  '0',
  '--max-tokens',
  '3',
  '--sample-every',
  '1h',
  '--json',
  jsonPath,
  '--quiet',
  ...extra,
];

describe('dropserve loadtest soak (errors)', () => {
  it('classifies HTTP and protocol errors, lists them and exits 1', async () => {
    cli.upstream = await startScriptedUpstream();
    const jsonPath = join(cli.dir, 'soak.json');
    expect(await runLoadtestCommand(args(cli.upstream.baseUrl, jsonPath))).toBe(1);
    const report = JSON.parse(await readFile(jsonPath, 'utf8')) as SoakReport;
    expect(report.outcomes).toEqual({
      ok: 2,
      aborted: 0,
      interrupted: 0,
      http_error: 2,
      stream_error: 0,
      protocol_error: 4,
      network_error: 0,
    });
    expect(report.errors).toBe(6);
    expect(report.errorsByDetail).toEqual({ 'http_503 503': 2, missing_done: 2, usage_mismatch: 2 });
    expect(report.errorSamples.map((e) => e.index)).toEqual([0, 1, 2, 4, 5, 6]);
    // The fake has no /metrics: no readings, and the report says why.
    expect(report.resources.rss).toBeNull();
    expect(report.resources.note).toMatch(/process_resident_memory_bytes/);
    expect(report.server).toBeNull();
    const text = cli.printed.join('\n');
    expect(text).toMatch(/^ {2}errors\s+6$/m);
    expect(text).toContain('errors by kind: http_503 503 2, missing_done 2, usage_mismatch 2');
    expect(text).toMatch(
      /#1 protocol_error missing_done \(stream (chat|completions) m\): stream ended without/,
    );
  });

  it('tolerates errors up to --max-errors', async () => {
    cli.upstream = await startScriptedUpstream();
    expect(
      await runLoadtestCommand(args(cli.upstream.baseUrl, join(cli.dir, 'a.json'), ['--max-errors', '6'])),
    ).toBe(0);
  });

  it('rejects flags it cannot honour before sending anything', async () => {
    cli.upstream = await startScriptedUpstream();
    const url = cli.upstream.baseUrl;
    await expect(
      runLoadtestCommand(['soak', '--url', url, '--variants', 'm', '--abort-share', '2']),
    ).rejects.toThrow(/--abort-share: expected a fraction in \[0, 1\]/);
    await expect(
      runLoadtestCommand(['soak', '--url', url, '--variants', 'm', '--max-tokens', '9-3']),
    ).rejects.toThrow(/--max-tokens: expected N or MIN-MAX/);
    await expect(
      runLoadtestCommand(['soak', '--url', url, '--variants', 'm', '--duration', 'soon']),
    ).rejects.toThrow(/--duration: expected a duration/);
    await expect(
      runLoadtestCommand(['soak', '--url', url, '--variants', 'm', '--pid', '1073741824']),
    ).rejects.toThrow(/--pid 1073741824: cannot read \/proc/);
    expect(cli.upstream.log).toHaveLength(0);
    expect(await runLoadtestCommand(['soak', '--help'])).toBe(0);
    expect(cli.printed.join('\n')).toContain('usage: dropserve loadtest soak --url URL --duration 10m');
  });

  it('on interrupt stops issuing and counts the cancelled request as interrupted, not as an error', async () => {
    const interrupt = new AbortController();
    cli.upstream = await startFakeUpstream({
      plan: ({ index }) => {
        // The third request arrives: interrupt the run while it is in flight (nothing written yet).
        if (index === 2) interrupt.abort();
        return { kind: 'stream', ttftMs: index === 2 ? 1000 : 0, itlMs: 0, chunks: 3 };
      },
    });
    const report = await runSoak({
      baseUrl: cli.upstream.baseUrl,
      models: ['m'],
      concurrency: 1,
      requests: 10,
      mix: { streamShare: 1, abortShare: 0, maxTokens: { min: 3, max: 3 } },
      sampleEveryS: 3600,
      signal: interrupt.signal,
    });
    expect(report.requests).toBe(3);
    expect(report.outcomes).toMatchObject({ ok: 2, interrupted: 1, aborted: 0 });
    expect(report.errors).toBe(0);
    expect(cli.upstream.log).toHaveLength(3);
  });
});
