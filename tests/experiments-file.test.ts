import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLoadtestCommand } from '../cli/loadtest.ts';
import type { ExperimentReport } from '../server/experiments/experiment-report.ts';
import { experimentsFileVersion } from '../server/experiments/experiments-file.ts';
import type { ExperimentsFileStatus } from '../server/experiments/experiments-file-source.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { experimentReport } from './support/experiment-traffic.ts';
import { expectSameLatency, printedBy, reportOfAllTraffic } from './support/merged-reports.ts';
import {
  e2eServerOptions,
  eventually,
  scrapeMetrics,
  sumOf,
  TEST_MODEL_NAME,
} from './support/test-server.ts';

/**
 * Two replicas behind a load balancer, one --experiments-file: both real servers on loopback read
 * the same YAML from a directory laid out as Kubernetes mounts a ConfigMap (the file is a symlink
 * through `..data`, and an update swaps `..data` atomically). A user lands on the same arm on both;
 * an edit reaches both without a restart; an invalid edit is rejected on both and the old
 * configuration keeps routing. Every wait is for a state the servers expose, never for time.
 */
const FULL = TEST_MODEL_NAME;
const PRUNED = `${TEST_MODEL_NAME}:attn-1`;
const USERS = Array.from({ length: 50 }, (_, i) => `user-${i}`);

const yamlOf = (weights: Record<string, number>, guardrail = 'agreement>=0.85'): string =>
  [
    'experiments:',
    '  - name: prune-ab',
    `    control: ${FULL}`,
    '    weights:',
    ...Object.entries(weights).map(([variant, w]) => `      "${variant}": ${w}`),
    `    guardrails: ["${guardrail}"]`,
    '',
  ].join('\n');

let mount: string;
let generation = 0;
let servers: RunningServer[] = [];

/** What the kubelet does on a ConfigMap change: a new timestamped dir, then `..data` renamed onto it. */
async function publish(text: string): Promise<void> {
  const dir = `..v${++generation}`;
  await mkdir(join(mount, dir));
  await writeFile(join(mount, dir, 'experiments.yaml'), text);
  await symlink(dir, join(mount, '..data_tmp'));
  await rename(join(mount, '..data_tmp'), join(mount, '..data'));
}

async function listing(server: RunningServer): Promise<{
  data: { name: string; scope: string; arms: { variant: string; weight: number }[] }[];
  experiments_file: ExperimentsFileStatus;
}> {
  return (await (await fetch(`${server.httpUrl}/v1/experiments`)).json()) as never;
}

async function armOf(server: RunningServer, user: string): Promise<string> {
  const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
  const { data, response } = await client.completions
    .create({ model: 'prune-ab', prompt: 'Once upon', max_tokens: 1, temperature: 0, user })
    .withResponse();
  expect(response.headers.get('x-dropserve-variant')).toBe(data.model);
  return data.model;
}

const armsOf = (server: RunningServer): Promise<string[]> => Promise.all(USERS.map((u) => armOf(server, u)));

beforeAll(async () => {
  mount = await mkdtemp(join(tmpdir(), 'dropserve-configmap-'));
  await publish(yamlOf({ [FULL]: 1, [PRUNED]: 1 }));
  await symlink('..data/experiments.yaml', join(mount, 'experiments.yaml'));
  servers = await Promise.all(
    [0, 1].map(() =>
      startServer(
        e2eServerOptions('synthetic', {
          variants: [{ name: 'attn-1', spec: 'attn:1' }],
          experimentsFile: join(mount, 'experiments.yaml'),
        }),
      ),
    ),
  );
}, 60_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close(0)));
  if (mount) await rm(mount, { recursive: true, force: true });
});

describe('--experiments-file on two replicas (synthetic model, real servers)', () => {
  it('both serve the file experiment, scope "file", same version, read-only in the admin API', async () => {
    const version = experimentsFileVersion(yamlOf({ [FULL]: 1, [PRUNED]: 1 }));
    for (const server of servers) {
      const list = await listing(server);
      expect(list.data).toMatchObject([
        {
          name: 'prune-ab',
          scope: 'file',
          arms: [
            { variant: FULL, weight: 1 },
            { variant: PRUNED, weight: 1 },
          ],
        },
      ]);
      expect(list.experiments_file).toMatchObject({
        version,
        experiments: ['prune-ab'],
        guardrails: { 'prune-ab': ['agreement>=0.85'] },
        last_error: null,
      });
      const report = (await (await fetch(`${server.httpUrl}/v1/experiments/prune-ab/report`)).json()) as {
        scope: string;
        guardrails: { metric: string; threshold: number }[];
      };
      expect(report.scope).toBe('file');
      expect(report.guardrails).toContainEqual({ metric: 'agreement', op: '>=', threshold: 0.85 });
      const post = await fetch(`${server.httpUrl}/v1/experiments/prune-ab`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ weights: { [FULL]: 1 } }),
      });
      expect(post.status).toBe(409);
      expect(((await post.json()) as { error: { code: string } }).error.code).toBe('experiment_from_file');
      const del = await fetch(`${server.httpUrl}/v1/experiments/prune-ab`, { method: 'DELETE' });
      expect(del.status).toBe(409);
    }
  });

  it('the same user lands on the same arm on both replicas', async () => {
    const [a, b] = await Promise.all(servers.map(armsOf));
    expect(a).toEqual(b);
    // A 50/50 split over 50 users uses both arms (the split is a hash, so this never flakes).
    expect(new Set(a)).toEqual(new Set([FULL, PRUNED]));
  });

  it('an edit reaches both without a restart; an invalid edit is rejected on both and the old config keeps routing', async () => {
    const before = await armsOf(servers[0]!);
    // 1:3 keeps every user whose hash fell in the first quarter on the full model, and moves the rest.
    const edited = yamlOf({ [FULL]: 1, [PRUNED]: 3 });
    await publish(edited);
    const version = experimentsFileVersion(edited);
    await eventually(async () => {
      const lists = await Promise.all(servers.map(listing));
      return lists.every((l) => l.experiments_file.version === version);
    });
    const [a, b] = await Promise.all(servers.map(armsOf));
    expect(a).toEqual(b);
    expect(a.filter((arm) => arm === FULL).length).toBeLessThan(before.filter((arm) => arm === FULL).length);
    // No user moves onto the arm whose share shrank.
    for (const [i, arm] of a.entries()) if (arm === FULL) expect(before[i]).toBe(FULL);
    for (const server of servers) {
      expect(
        sumOf(await scrapeMetrics(server.httpUrl), 'dropserve:experiments_file_reloads_total', {
          result: 'ok',
        }),
      ).toBe(1);
    }

    // An unknown variant: both reject it and keep routing with the edited version.
    const invalid = yamlOf({ [FULL]: 1, [`${TEST_MODEL_NAME}:attn-9`]: 1 });
    await publish(invalid);
    await eventually(async () => {
      const counts = await Promise.all(
        servers.map(async (s) =>
          sumOf(await scrapeMetrics(s.httpUrl), 'dropserve:experiments_file_reloads_total', {
            result: 'rejected',
          }),
        ),
      );
      return counts.every((n) => n === 1);
    });
    for (const server of servers) {
      const { experiments_file: file } = await listing(server);
      expect(file.version).toBe(version);
      expect(file.last_error).toMatchObject({ version: experimentsFileVersion(invalid) });
      expect(file.last_error!.message).toMatch(/variant "tiny:attn-9" is not served/);
      expect(file.reloads).toEqual({ ok: 1, rejected: 1 });
    }
    expect(await Promise.all(servers.map(armsOf))).toEqual([a, a]);
  });

  it('ab-report over both replicas gives the verdict one server fed all the traffic would give', async () => {
    // Every request sent above has been counted (replica 0 got 4 rounds of the 50 users, replica 1 got 3).
    const counted = async (s: RunningServer): Promise<number> => {
      const r = (await (
        await fetch(`${s.httpUrl}/v1/experiments/prune-ab/report`)
      ).json()) as ExperimentReport;
      return r.arms.reduce((n, x) => n + x.requests, 0);
    };
    await eventually(
      async () => (await counted(servers[0]!)) === 200 && (await counted(servers[1]!)) === 150,
    );
    const reports = await Promise.all(servers.map((s) => experimentReport(s, 'prune-ab')));
    const urls = servers.flatMap((s) => ['--url', s.httpUrl]);
    const printed = await printedBy('log', async () => {
      expect(await runLoadtestCommand(['ab-report', ...urls, '--experiment', 'prune-ab', '--json'])).toBe(0);
    });
    const merged = JSON.parse(printed[0]!) as ExperimentReport & { notes: string[] };
    expect(merged).toMatchObject({ replicas: 2, scope: 'file' });
    // Only runtime-created experiments carry the "this replica only" warning.
    expect(merged.notes.join('\n')).not.toMatch(/scope "replica"/);

    const oneServer = reportOfAllTraffic(reports);
    const arm = (r: ExperimentReport, variant: string) => r.arms.find((x) => x.variant === variant)!;
    for (const variant of [FULL, PRUNED]) {
      expect(arm(merged, variant).requests).toBe(reports.reduce((n, r) => n + arm(r, variant).requests, 0));
    }
    expect(arm(merged, PRUNED).requests).toBeGreaterThan(0);
    expectSameLatency(arm(merged, PRUNED), arm(oneServer, PRUNED));
  });
});
