import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../logger.ts';
import { ExperimentRouter } from './experiment-router.ts';
import { experimentsFileVersion, parseExperimentsFile } from './experiments-file.ts';
import { ExperimentsFileSource } from './experiments-file-source.ts';

const JSON_TEXT = JSON.stringify({
  experiments: [
    {
      name: 'prune-ab',
      control: 'm',
      arms: [
        { variant: 'm', weight: 50 },
        { variant: 'm:attn-2', weight: 50 },
      ],
      guardrails: ['agreement>=0.85'],
    },
    { name: 'canary', weights: { m: 9, 'm:attn-4': 1 } },
  ],
});

const YAML_TEXT = `experiments:
  - name: prune-ab
    control: m
    arms:
      - {variant: m, weight: 50}
      - {variant: "m:attn-2", weight: 50}
    guardrails: ["agreement>=0.85"]
  - name: canary
    weights: {m: 9, "m:attn-4": 1}
`;

describe('parseExperimentsFile', () => {
  it('reads JSON and YAML into the same experiments, versioned by a hash of the bytes', () => {
    const fromJson = parseExperimentsFile(JSON_TEXT, '/etc/dropserve/experiments.json');
    const fromYaml = parseExperimentsFile(YAML_TEXT, '/etc/dropserve/experiments.yaml');
    expect(fromYaml.experiments).toEqual(fromJson.experiments);
    expect(fromJson.experiments[0]).toEqual({
      name: 'prune-ab',
      control: 'm',
      arms: [
        { variant: 'm', weight: 50 },
        { variant: 'm:attn-2', weight: 50 },
      ],
      guardrails: [{ metric: 'agreement', op: '>=', threshold: 0.85 }],
    });
    expect(fromJson.experiments[1]).toEqual({
      name: 'canary',
      arms: [
        { variant: 'm', weight: 9 },
        { variant: 'm:attn-4', weight: 1 },
      ],
      guardrails: [],
    });
    expect(fromJson.version).toBe(experimentsFileVersion(JSON_TEXT));
    expect(fromJson.version).toMatch(/^[0-9a-f]{16}$/);
    expect(fromYaml.version).not.toBe(fromJson.version);
    expect(parseExperimentsFile('', 'x.yaml').experiments).toEqual([]);
  });

  it('names the file and the entry in every error', () => {
    const bad =
      (text: string, path = 'e.json') =>
      () =>
        parseExperimentsFile(text, path);
    expect(bad('{"experiments": [')).toThrow(/^e\.json: not valid JSON/);
    expect(bad('experiments: [a: b: c', 'e.yaml')).toThrow(/^e\.yaml: not valid YAML/);
    expect(bad('{"experiment": []}')).toThrow(/^e\.json: experiments: .*expected \{"experiments"/);
    expect(bad('{"experiments": {}}')).toThrow(/experiments: must be a list/);
    const one = (entry: object) => JSON.stringify({ experiments: [entry] });
    expect(bad(one({ name: 'a b', weights: { m: 1 } }))).toThrow(/experiments\.0 \(a b\): experiment name/);
    expect(bad(one({ name: 'x', weights: { m: 1 }, guardrails: ['agreement>0.8'] }))).toThrow(
      /experiments\.0 \(x\): --experiment-guardrail "agreement>0\.8"/,
    );
    expect(bad(one({ name: 'x', arms: [{ variant: 'm', weight: -1 }] }))).toThrow(
      /arms\.0\.weight: must be ≥ 0/,
    );
    expect(bad(one({ name: 'x', weights: { m: 1 }, colour: 'red' }))).toThrow(/experiments\.0 \(x\)/);
    expect(
      bad(
        JSON.stringify({
          experiments: [
            { name: 'x', weights: { m: 1 } },
            { name: 'x', weights: { m: 1 } },
          ],
        }),
      ),
    ).toThrow(/experiments\.1 \(x\): the name appears twice/);
  });
});

describe('ExperimentsFileSource', () => {
  const VARIANTS = new Set(['m', 'm:attn-2', 'm:attn-4']);
  let dir: string;
  let path: string;
  let router: ExperimentRouter;
  let registry: Registry;
  let source: ExperimentsFileSource;

  /** Replaces the file the way a ConfigMap update does: a new file renamed over the old one. */
  const swap = async (text: string): Promise<void> => {
    await writeFile(`${path}.tmp`, text);
    await rename(`${path}.tmp`, path);
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dropserve-experiments-file-'));
    path = join(dir, 'experiments.json');
    await writeFile(path, JSON_TEXT);
    router = new ExperimentRouter((v) => VARIANTS.has(v));
    router.set('mine', [{ variant: 'm', weight: 1 }]); // --experiment / admin API: replica scope
    registry = new Registry();
    // No watches or poll: each test calls check() itself, so nothing depends on event timing.
    source = new ExperimentsFileSource({ path, router, logger: silentLogger(), registry });
    await source.load();
  });
  afterEach(async () => {
    source.close();
    await rm(dir, { recursive: true, force: true });
  });

  const reloads = async (result: string): Promise<number> => {
    const metric = (await registry.getSingleMetric('dropserve:experiments_file_reloads_total')!.get()).values;
    return metric.find((v) => v.labels.result === result)!.value;
  };

  it('sets the file experiments with scope "file" beside replica-scoped ones', () => {
    expect(router.list().map((e) => [e.name, e.scope])).toEqual([
      ['mine', 'replica'],
      ['prune-ab', 'file'],
      ['canary', 'file'],
    ]);
    expect(router.get('prune-ab')!.control).toBe('m');
    expect(router.get('prune-ab')!.guardrails).toEqual([{ metric: 'agreement', op: '>=', threshold: 0.85 }]);
    expect(source.status()).toMatchObject({
      version: experimentsFileVersion(JSON_TEXT),
      experiments: ['prune-ab', 'canary'],
      guardrails: { 'prune-ab': ['agreement>=0.85'], canary: [] },
      last_error: null,
      reloads: { ok: 0, rejected: 0 },
    });
  });

  it('an edit replaces the file experiments whole: changed, added, removed', async () => {
    const next = JSON.stringify({
      experiments: [
        { name: 'prune-ab', weights: { m: 1, 'm:attn-4': 3 } },
        { name: 'new', weights: { 'm:attn-2': 1 } },
      ],
    });
    await swap(next);
    await source.check();
    expect(router.list().map((e) => e.name)).toEqual(['mine', 'prune-ab', 'new']);
    expect(router.get('prune-ab')!.arms).toEqual([
      { variant: 'm', weight: 1 },
      { variant: 'm:attn-4', weight: 3 },
    ]);
    expect(source.status()).toMatchObject({
      version: experimentsFileVersion(next),
      reloads: { ok: 1, rejected: 0 },
    });
    expect(await reloads('ok')).toBe(1);
    await source.check(); // same bytes: nothing to judge
    expect(source.status().reloads).toEqual({ ok: 1, rejected: 0 });
  });

  it('an invalid edit is rejected and the configuration in force stays, even when it fails half way', async () => {
    const before = router.list();
    // The first entry would apply; the second names a variant nobody serves: nothing may change.
    const half = JSON.stringify({
      experiments: [
        { name: 'prune-ab', weights: { m: 1 } },
        { name: 'canary', weights: { 'm:attn-9': 1 } },
      ],
    });
    await swap(half);
    await source.check();
    expect(router.list()).toEqual(before);
    expect(source.status()).toMatchObject({
      version: experimentsFileVersion(JSON_TEXT),
      last_error: { version: experimentsFileVersion(half) },
      reloads: { ok: 0, rejected: 1 },
    });
    expect(source.status().last_error!.message).toMatch(/variant "m:attn-9" is not served/);

    await swap('{"experiments": [ broken');
    await source.check();
    await swap(JSON.stringify({ experiments: [{ name: 'mine', weights: { m: 1 } }] }));
    await source.check();
    expect(source.status().last_error!.message).toMatch(
      /"mine" is already defined by --experiment or the admin API/,
    );
    expect(router.list()).toEqual(before);
    expect(await reloads('rejected')).toBe(3);
    expect(await reloads('ok')).toBe(0);

    // A good edit afterwards loads and clears the error.
    await swap(JSON_TEXT.replace('canary', 'canary2'));
    await source.check();
    expect(source.status()).toMatchObject({ last_error: null, reloads: { ok: 1, rejected: 3 } });
  });

  it('start-up with an invalid file fails', async () => {
    await writeFile(path, '{"experiments": [{"name": "x", "weights": {"nope": 1}}]}');
    const fresh = new ExperimentsFileSource({
      path,
      router: new ExperimentRouter((v) => VARIANTS.has(v)),
      logger: silentLogger(),
    });
    await expect(fresh.load()).rejects.toThrow(/variant "nope" is not served/);
    const missing = new ExperimentsFileSource({
      path: join(dir, 'none.yaml'),
      router,
      logger: silentLogger(),
    });
    await expect(missing.load()).rejects.toThrow(/--experiments-file .*none\.yaml: cannot read: ENOENT/);
  });
});
