import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseExperimentsFile } from '../../server/experiments/experiments-file.ts';

/**
 * No Docker engine or cluster here, so the Dockerfile and manifests cannot be built or applied in CI.
 * These checks catch what review tends to miss: a stage referenced but not defined, a target without
 * its non-root user or health check, an onnxruntime-node install flag that does not mean what the
 * Dockerfile says, or an HPA metric name the adapter rule does not produce.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string): string => readFileSync(root + path, 'utf8');

interface Stage {
  name: string;
  base: string;
  lines: string[];
}

function parseDockerfile(text: string): { globalArgs: Map<string, string>; stages: Stage[] } {
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of logical) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) {
      stages.push({ name: from[2] ?? `#${stages.length}`, base: from[1]!, lines: [] });
      continue;
    }
    const arg = /^ARG\s+(\w+)(?:=(\S*))?$/.exec(line);
    if (arg && stages.length === 0) globalArgs.set(arg[1]!, arg[2] ?? '');
    else stages[stages.length - 1]?.lines.push(line);
  }
  return { globalArgs, stages };
}

describe('Dockerfile', () => {
  const { globalArgs, stages } = parseDockerfile(read('Dockerfile'));
  const stage = (name: string): Stage => {
    const found = stages.find((s) => s.name === name);
    expect(found, `stage ${name}`).toBeDefined();
    return found!;
  };
  const resolve = (ref: string): string =>
    ref.replace(/\$\{(\w+)\}/g, (_, name: string) => globalArgs.get(name) ?? '?');

  it('defines every stage it copies from, with unique names, and only global ARGs in FROM', () => {
    const names = stages.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    for (const s of stages) {
      for (const match of s.base.matchAll(/\$\{(\w+)\}/g))
        expect(globalArgs.has(match[1]!), match[1]).toBe(true);
      for (const line of s.lines) {
        const from = /--from=(\S+)/.exec(line)?.[1];
        if (from) expect(names, `${s.name}: COPY --from=${from}`).toContain(from);
      }
    }
    // FROM k6-${WITH_K6}: both values name a stage, and the default is off.
    expect(globalArgs.get('WITH_K6')).toBe('0');
    expect(names).toEqual(expect.arrayContaining(['k6-0', 'k6-1']));
    expect(resolve(stage('k6').base)).toBe('k6-0');
  });

  it('builds cpu on the Node image and cuda on a CUDA 12 + cuDNN runtime image', () => {
    expect(resolve(stage('node').base)).toMatch(/^node:20-bookworm-slim$/);
    expect(stage('cpu').base).toBe('node');
    expect(resolve(stage('cuda').base)).toMatch(/^nvidia\/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu/);
  });

  for (const target of ['cpu', 'cuda']) {
    it(`${target}: non-root, health-checked, ports, model volume, serve entrypoint`, () => {
      const lines = stage(target).lines.join('\n');
      expect(lines).toMatch(/^USER dropserve$/m);
      expect(lines).toMatch(/useradd --system --uid 10001/);
      expect(lines).toMatch(/^EXPOSE 8000 50051$/m);
      expect(lines).toMatch(/^VOLUME \["\/models"\]$/m);
      expect(lines).toMatch(/^HEALTHCHECK .*http:\/\/127\.0\.0\.1:8000\/health/m);
      expect(lines).toMatch(/^ENTRYPOINT \["node", "bin\/dropserve\.js", "serve", "--host", "0\.0\.0\.0"/m);
      // The user switch comes after everything is copied in as root.
      const lastCopy = Math.max(...stage(target).lines.map((l, i) => (l.startsWith('COPY') ? i : -1)));
      expect(stage(target).lines.indexOf('USER dropserve')).toBeGreaterThan(lastCopy);
    });
  }

  it('installs production dependencies with the CUDA EP download off (cpu) and forced (cuda)', () => {
    const cpu = stage('deps-cpu').lines.join('\n');
    const cuda = stage('deps-cuda').lines.join('\n');
    expect(cpu).toMatch(/ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev/);
    expect(cuda).toMatch(/ONNXRUNTIME_NODE_INSTALL=1 npm ci --omit=dev/);
    expect(cuda).toContain(
      'test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so',
    );
    expect(stage('cpu').lines.join('\n')).toContain('COPY --from=deps-cpu /app/node_modules ./node_modules');
    expect(stage('cuda').lines.join('\n')).toContain(
      'COPY --from=deps-cuda /app/node_modules ./node_modules',
    );
  });
});

describe("onnxruntime-node's install script means what the Dockerfile assumes", () => {
  const require = createRequire(import.meta.url);
  const scriptDir = `${root}node_modules/onnxruntime-node/script/`;
  const { parseInstallFlag } = require(`${scriptDir}install-utils.js`) as { parseInstallFlag: () => unknown };
  const metadata = require(`${scriptDir}install-metadata.js`) as {
    requirements: Record<string, string[]>;
    manifests: Record<string, Record<string, unknown>>;
  };
  const saved = { ...process.env };
  afterEach(() => {
    for (const key of ['ONNXRUNTIME_NODE_INSTALL', 'npm_config_onnxruntime_node_install']) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });

  it('skip = download nothing; 1 = force the platform manifest, which on linux/x64 is the CUDA 12 EP', () => {
    process.env.ONNXRUNTIME_NODE_INSTALL = 'skip';
    expect(parseInstallFlag()).toBe(false);
    process.env.ONNXRUNTIME_NODE_INSTALL = '1';
    expect(parseInstallFlag()).toBe(true);
    expect(metadata.requirements['linux/x64']).toEqual(['cuda12']);
    expect(Object.keys(metadata.manifests['linux/x64:cuda12']!)).toContain(
      './libonnxruntime_providers_cuda.so',
    );
  });
});

describe('Kubernetes manifests', () => {
  const deployment = read('deploy/k8s/deployment.yaml');
  const service = read('deploy/k8s/service.yaml');
  const hpa = read('deploy/k8s/hpa.yaml');
  const adapter = read('deploy/k8s/prometheus-adapter-rules.yaml');

  it('autoscales on the name the adapter rule gives the gauge the server exports', () => {
    const hpaMetric = /metric:\s*\n\s*name:\s*(\S+)/.exec(hpa)?.[1];
    const series = /seriesQuery: '([\w:]+)\{/.exec(adapter)?.[1];
    const rename = /matches: "([^"]+)"\s*\n\s*as: "([^"]+)"/.exec(adapter);
    expect(series).toBe('dropserve:num_requests_waiting');
    // The adapter writes capture groups as ${1}; JavaScript's replace wants $1.
    const jsReplacement = rename![2]!.replace(/\$\{(\d+)\}/g, '$$$1');
    const renamed = series!.replace(new RegExp(rename![1]!), jsReplacement);
    expect(renamed).toBe(hpaMetric);
    expect(hpa).toMatch(/apiVersion: autoscaling\/v2/);
    expect(hpa).toMatch(/type: Pods/);
    // The gauge itself: vLLM's name under the dropserve: prefix.
    const metrics = read('server/metrics/metrics.ts');
    expect(metrics).toContain("const PREFIX = 'dropserve:'");
    expect(metrics).toContain("gauge('num_requests_waiting'");
  });

  it('probes /health on the named HTTP port and exposes the ports the image does', () => {
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      expect(deployment).toMatch(
        new RegExp(`${probe}:\\s*\\n\\s*httpGet: \\{ path: /health, port: http \\}`),
      );
    }
    expect(deployment).toMatch(/- name: http\s*\n\s*containerPort: 8000/);
    expect(deployment).toMatch(/- name: grpc\s*\n\s*containerPort: 50051/);
    expect(deployment).toMatch(/mountPath: \/models\s*\n\s*readOnly: true/);
    expect(deployment).toMatch(/runAsUser: 10001/);
    expect(service).toMatch(/sessionAffinity: None/);
    expect(service).toMatch(/targetPort: http/);
    expect(service).toMatch(/targetPort: grpc/);
  });

  it('mounts the experiments ConfigMap as a directory and serves every variant its experiments name', () => {
    const configMap = parseAllDocuments(read('deploy/k8s/experiments-configmap.yaml'))[0]!.toJS() as {
      kind: string;
      metadata: { name: string };
      data: Record<string, string>;
    };
    const spec = (
      parseAllDocuments(deployment)[0]!.toJS() as {
        spec: { template: { spec: { containers: Container[]; volumes: Volume[] } } };
      }
    ).spec.template.spec;
    type Container = {
      args: string[];
      volumeMounts: { name: string; mountPath: string; subPath?: string }[];
    };
    type Volume = { name: string; configMap?: { name: string } };
    const container = spec.containers[0]!;
    expect(configMap.kind).toBe('ConfigMap');
    expect(read('deploy/k8s/kustomization.yaml')).toMatch(/- experiments-configmap\.yaml/);

    const flag = container.args.find((a) => a.startsWith('--experiments-file='))!;
    const path = flag.slice('--experiments-file='.length);
    const volume = spec.volumes.find((v) => v.configMap?.name === configMap.metadata.name)!;
    const mount = container.volumeMounts.find((m) => m.name === volume.name)!;
    // subPath mounts never see ConfigMap updates: the directory must be mounted whole.
    expect(mount.subPath).toBeUndefined();
    expect(path).toBe(`${mount.mountPath}/${Object.keys(configMap.data)[0]}`);

    const file = parseExperimentsFile(Object.values(configMap.data)[0]!, path);
    const model = /--model=\S*\/([^/]+)\.bin/.exec(container.args.join(' '))![1]!;
    const served = [
      model,
      ...container.args
        .flatMap((a) => /^--variant=([^=]+)=/.exec(a)?.slice(1) ?? [])
        .map((v) => `${model}:${v}`),
    ];
    expect(file.experiments.length).toBeGreaterThan(0);
    for (const e of file.experiments) for (const arm of e.arms) expect(served).toContain(arm.variant);
  });
});
