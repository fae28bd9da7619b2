import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoadtestCommand } from '../cli/loadtest.ts';
import type { CapacityReport } from '../loadtests/src/capacity.ts';
import type { CapacityPlan } from '../loadtests/src/plan.ts';
import { fetchVariants } from '../loadtests/src/variants-client.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { e2eServerOptions, eventually } from './support/test-server.ts';

/**
 * `loadtest capacity` then `loadtest plan`, both through the CLI, against a real stories260K server
 * with two pruned variants and shadow scoring on. Measured throughput depends on the machine, so
 * every plan figure is checked against the numbers in the report the tool itself wrote: the ceil
 * formula per variant, agreement carried over from the server's shadow scores, and a choice that is
 * the cheapest among variants at or above --min-agreement.
 */
const FULL = 'stories260K';
const MODELS = [FULL, `${FULL}:attn-2`, `${FULL}:attn-4`];
const TARGET_RPS = 1000; // well above one replica, so the variants need different counts
const HEADROOM = 0.7;
const COST = 1.2;

let server: RunningServer;
let dir: string;
let capacity: CapacityReport;

beforeAll(async () => {
  server = await startServer(
    e2eServerOptions('stories260K', {
      variants: [
        { name: 'attn-2', spec: 'attn:1,3' },
        { name: 'attn-4', spec: 'attn:1,2,3,4' },
      ],
      shadowRate: 1,
    }),
  );
  dir = await mkdtemp(join(tmpdir(), 'dropserve-plan-e2e-'));
  // Agreement must exist before the sweep so the report has it whatever the scorer's pace: one
  // request per pruned variant, then wait for the state GET /v1/variants shows.
  const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
  for (const model of MODELS.slice(1)) {
    await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 16, temperature: 0 });
  }
  await eventually(async () => {
    const variants = (await fetchVariants(server.httpUrl)) ?? [];
    return MODELS.slice(1).every((m) => (variants.find((v) => v.id === m)?.agreementSamples ?? 0) > 0);
  });
  const capacityPath = join(dir, 'capacity.json');
  // An SLO no request on loopback misses: both levels hold, so each variant's capacity is read
  // at 2 users; what is measured there is the machine's business, not the test's.
  const code = await runLoadtestCommand([
    'capacity',
    '--url',
    server.httpUrl,
    '--models',
    MODELS.join(','),
    '--slo',
    'ttft_ms:600000',
    '--levels',
    '1,2',
    '--requests-per-level',
    '6',
    '--warmup',
    '0',
    '--input-len',
    '8',
    '--output-len',
    '16',
    '--saturation-gain=-1',
    '--quiet',
    '--json',
    capacityPath,
  ]);
  expect(code).toBe(0);
  capacity = JSON.parse(await readFile(capacityPath, 'utf8')) as CapacityReport;
}, 120_000);

afterAll(async () => {
  await server?.close(0);
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function plan(...flags: string[]): Promise<{ code: number; plan: CapacityPlan }> {
  const path = join(dir, `plan-${flags.join('_').replace(/[^\w.-]/g, '')}.json`);
  const code = await runLoadtestCommand([
    'plan',
    '--capacity',
    join(dir, 'capacity.json'),
    '--target-rps',
    String(TARGET_RPS),
    '--headroom',
    String(HEADROOM),
    '--replica-cost',
    `${COST}/h`,
    '--json',
    path,
    ...flags,
  ]);
  return { code, plan: JSON.parse(await readFile(path, 'utf8')) as CapacityPlan };
}

const rankOf = (v: CapacityPlan['variants'][number]): number => v.costPerHour!;

describe('loadtest plan on a capacity report the tool just measured (stories260K)', () => {
  it('the capacity report holds, per variant, req/s at the SLO and agreement from shadow scoring', () => {
    expect(capacity.variants.map((v) => v.model)).toEqual(MODELS);
    for (const v of capacity.variants) {
      expect(v.maxConcurrency, v.model).toBe(2);
      const level = v.levels.find((l) => l.concurrency === 2)!;
      expect(level.summary.completed).toBe(6);
      expect(level.summary.totalOutputTokens).toBe(6 * 16);
      expect(level.summary.requestThroughput).toBeGreaterThan(0);
    }
    expect(capacity.variants[0]!.agreement).toBe(1);
    for (const v of capacity.variants.slice(1)) {
      expect(v.agreementSamples, v.model).toBeGreaterThan(0);
      expect(v.agreement! >= 0 && v.agreement! <= 1, `${v.model} agreement ${v.agreement}`).toBe(true);
    }
  });

  it('replicas = ceil(target / (req/s at the SLO × headroom)) per variant; cost per hour and per 1M output tokens', async () => {
    const { code, plan: p } = await plan();
    expect(code).toBe(0);
    expect(p.variants.map((v) => v.model)).toEqual(MODELS);
    for (const [i, v] of p.variants.entries()) {
      const measured = capacity.variants[i]!.levels.find((l) => l.concurrency === 2)!.summary
        .requestThroughput;
      expect(v.capacityRps, v.model).toBe(measured);
      expect(v.replicas, v.model).toBe(Math.ceil(TARGET_RPS / (measured * HEADROOM)));
      expect(v.costPerHour).toBeCloseTo(v.replicas! * COST, 9);
      expect(v.costPerMillionOutputTokens).toBeCloseTo(
        (v.replicas! * COST * 1e6) / (TARGET_RPS * 16 * 3600),
        9,
      );
      expect(v.agreement).toBe(capacity.variants[i]!.agreement);
    }
    const cheapest = Math.min(...p.variants.map(rankOf));
    expect(rankOf(p.variants.find((v) => v.model === p.chosen)!)).toBe(cheapest);
  });

  it('--min-agreement keeps low-agreement variants out of the choice', async () => {
    // attn-4 is declared at 0.5, below the bar; attn-2 keeps what the server measured.
    const { plan: p } = await plan('--min-agreement', '0.9', '--agreement', `${FULL}:attn-4=0.5`);
    const attn4 = p.variants.find((v) => v.model === `${FULL}:attn-4`)!;
    expect(attn4).toMatchObject({ agreement: 0.5, agreementSource: 'override', eligible: false });
    for (const v of p.variants) expect(v.eligible, v.model).toBe(v.agreement! >= 0.9);
    const eligible = p.variants.filter((v) => v.eligible);
    expect(eligible.map((v) => v.model)).toContain(FULL);
    expect(p.chosen).not.toBe(`${FULL}:attn-4`);
    expect(rankOf(p.variants.find((v) => v.model === p.chosen)!)).toBe(Math.min(...eligible.map(rankOf)));

    // A bar just above the best pruned variant (or 1 when one agrees fully): the choice clears it.
    const bar = Math.min(1, Math.max(...capacity.variants.slice(1).map((v) => v.agreement!)) + 1e-9);
    const { plan: strict } = await plan('--min-agreement', String(bar));
    for (const v of strict.variants) expect(v.eligible, v.model).toBe(v.agreement! >= bar);
    expect(strict.variants.find((v) => v.model === strict.chosen)!.agreement).toBeGreaterThanOrEqual(bar);
  });
});
