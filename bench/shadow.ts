import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runLoadtest } from '../loadtests/src/loadtest.ts';
import type { LoadtestSummary } from '../loadtests/src/metrics.ts';
import { DEFAULT_SHADOW_MAX_IN_FLIGHT, type RunningServer, startServer } from '../server/start-server.ts';
import { commitId, median, printTable, STORIES260K } from './common.ts';

/**
 * What live accuracy costs interactive users: p50 TTFT under a fixed closed-loop load on a pruned
 * variant, served without shadow scoring (baseline) and with --shadow-rate 1 (every finished request
 * re-scored by the full model at background priority). Both servers run in this process, each with
 * its own engine worker; only one is loaded at a time, and rounds alternate (off, on, off, on, …).
 * On a shared machine the load from other processes drifts, so each "on" round is compared with
 * the "off" round just before it, and the ratio reported is the median of those paired ratios.
 * Target: candidate/baseline ≤ 1.10×.
 */
const PRUNED = 'attn-2';

export async function runShadowBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      concurrency: { type: 'string', default: '4' },
      requests: { type: 'string', default: '80' },
      warmup: { type: 'string', default: '8' },
      'input-len': { type: 'string', default: '32' },
      'output-len': { type: 'string', default: '48' },
      rounds: { type: 'string', default: '6' },
      'max-in-flight': { type: 'string', default: String(DEFAULT_SHADOW_MAX_IN_FLIGHT) },
    },
  });
  const model = values.model ?? (existsSync(STORIES260K) ? STORIES260K : undefined);
  const concurrency = Number(values.concurrency);
  const requests = Number(values.requests);
  const rounds = Number(values.rounds);
  const inputLen = Number(values['input-len']);
  const outputLen = Number(values['output-len']);
  const maxInFlight = Number(values['max-in-flight']);
  const start = (shadowRate: number): Promise<RunningServer> =>
    startServer({
      host: '127.0.0.1',
      port: 0,
      grpcPort: 0,
      collectProcessMetrics: false,
      model,
      // Attention layers 1 and 3 of 5 (stories260K) or of the synthetic model's layers.
      variants: [{ name: PRUNED, spec: 'attn:1,3' }],
      shadowRate,
      shadowMaxInFlight: maxInFlight,
    });
  const baseline = await start(0);
  const candidate = await start(1);
  const variant = `${baseline.engine.model.name}:${PRUNED}`;
  console.log(
    `bench shadow: ${variant}, closed loop ${concurrency} users, ${requests} requests/round ` +
      `(+${values.warmup} warm-up), ${inputLen} words in, ${outputLen} tokens out (EOS ignored), greedy, ` +
      `${rounds} rounds alternating, shadow max in flight ${maxInFlight}, commit ${commitId()}`,
  );
  const summaries: { off: LoadtestSummary[]; on: LoadtestSummary[] } = { off: [], on: [] };
  try {
    for (let round = 0; round < rounds; round++) {
      for (const [key, server] of [
        ['off', baseline],
        ['on', candidate],
      ] as const) {
        const report = await runLoadtest({
          baseUrl: server.httpUrl,
          model: variant,
          concurrency,
          requests,
          warmup: Number(values.warmup),
          dataset: { kind: 'random', inputLen, outputLen, lenSpread: 0 },
          ignoreEos: true,
          seed: round,
        });
        if (report.summary.failed > 0) throw new Error(`${report.summary.failed} requests failed (${key})`);
        summaries[key].push(report.summary);
      }
    }
    const shadow = await shadowCounts(candidate, variant);
    /** Median of each "on" round over the "off" round just before it. */
    const pairedRatio = (pick: (s: LoadtestSummary) => number): number =>
      median(summaries.on.map((on, i) => pick(on) / pick(summaries.off[i]!)));
    const row = (label: string, pick: (s: LoadtestSummary) => number, digits = 1): (string | number)[] => [
      label,
      median(summaries.off.map(pick)).toFixed(digits),
      median(summaries.on.map(pick)).toFixed(digits),
      `${pairedRatio(pick).toFixed(2)}×`,
    ];
    console.log('');
    printTable(
      ['median over rounds', 'shadow off', 'shadow rate 1', 'on/off (paired)'],
      [
        row('TTFT p50 (ms)', (s) => s.ttftMs.p50, 2),
        row('TTFT p99 (ms)', (s) => s.ttftMs.p99, 2),
        row('TPOT p50 (ms)', (s) => s.tpotMs.p50, 2),
        row('ITL p99 (ms)', (s) => s.itlMs.p99, 2),
        row('E2E p50 (ms)', (s) => s.e2eMs.p50),
        row('output tokens/s', (s) => s.outputThroughput),
      ],
    );
    const ratio = pairedRatio((s) => s.ttftMs.p50);
    console.log(
      `TTFT p50 ratio per round: ${summaries.on.map((on, i) => (on.ttftMs.p50 / summaries.off[i]!.ttftMs.p50).toFixed(2)).join(', ')}`,
    );
    console.log(
      `\nshadow scoring, candidate server: ${shadow.sampled} requests sampled, ${shadow.scored} scored, ` +
        `${shadow.dropped} dropped (${shadow.droppedByReason}); fidelity agreement ` +
        `${((candidate.scorer?.fidelity(variant).agreement ?? 0) * 100).toFixed(1)}%`,
    );
    console.log(
      `p50 TTFT with shadow scoring: ${ratio.toFixed(2)}× the baseline (target ≤ 1.10×): ${ratio <= 1.1 ? 'met' : 'NOT met'}`,
    );
    return 0;
  } finally {
    await Promise.all([baseline.close(0), candidate.close(0)]);
  }
}

async function shadowCounts(
  server: RunningServer,
  variant: string,
): Promise<{ sampled: number; scored: number; dropped: number; droppedByReason: string }> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const label = `variant="${variant}"`;
  const sum = (name: string): number =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) && l.includes(label))
      .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  const reasons = text
    .split('\n')
    .filter((l) => l.startsWith('dropserve:shadow_dropped_total{') && l.includes(label))
    .map((l) => `${/reason="([^"]+)"/.exec(l)?.[1]} ${l.slice(l.lastIndexOf(' ') + 1)}`);
  return {
    sampled: sum('dropserve:shadow_requests_total'),
    scored: sum('dropserve:fidelity_top1_agreement_count'),
    dropped: sum('dropserve:shadow_dropped_total'),
    droppedByReason: reasons.join(', ') || 'none',
  };
}
