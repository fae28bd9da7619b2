import { readFile, writeFile } from 'node:fs/promises';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { DropserveError } from '../engine/errors.ts';
import { fetchExperimentReports } from '../loadtests/src/ab-report.ts';
import {
  type CapacityOptions,
  type CapacityReport,
  geometricLevels,
  runCapacity,
} from '../loadtests/src/capacity.ts';
import { renderCapacityChart } from '../loadtests/src/capacity-chart.ts';
import {
  formatCapacityComparison,
  mergedForChart,
  runCapacityComparison,
} from '../loadtests/src/capacity-compare.ts';
import { type DatasetSpec, loadJsonlDataset } from '../loadtests/src/dataset.ts';
import { type LoadtestReport, runLoadtest } from '../loadtests/src/loadtest.ts';
import { fetchModelIds } from '../loadtests/src/models-client.ts';
import type { Endpoint } from '../loadtests/src/openai-stream.ts';
import {
  type PlanMix,
  parseAgreementOverride,
  parseCapacityReport,
  parseMixSpec,
  parseReplicaCost,
  planCapacity,
} from '../loadtests/src/plan.ts';
import { formatCapacityPlan } from '../loadtests/src/plan-format.ts';
import { createLoadtestProgressBar } from '../loadtests/src/progress-bar.ts';
import {
  formatCapacityLevel,
  formatCapacityReport,
  formatComparison,
  formatLoadtestReport,
} from '../loadtests/src/report-format.ts';
import { parseSlo } from '../loadtests/src/slo.ts';
import { runSoak } from '../loadtests/src/soak.ts';
import { parseTokenRange, resolveModels } from '../loadtests/src/soak-plan.ts';
import { formatSoakProgress, formatSoakReport } from '../loadtests/src/soak-report.ts';
import { mergeReplicaReports } from '../server/experiments/merge-reports.ts';
import { formatExperimentReport } from '../server/experiments/report-text.ts';

const LOADTEST_HELP = `usage: dropserve loadtest [flags]          load-test a running server (OpenAI API, streaming)
       dropserve loadtest capacity [flags] how many concurrent users each variant holds within an SLO
       dropserve loadtest soak [flags]     hours of mixed traffic with client aborts; server RSS and fd drift
       dropserve loadtest plan [flags]     replicas and cost per variant for a target load, from a capacity report
       dropserve loadtest ab-report [flags] an A/B experiment's intervals and verdicts, merged over replicas

target
  --url URL               server root (default http://127.0.0.1:8000)
  --model NAME            served model or variant, e.g. stories260K:attn-2 (default: first of /v1/models)
  --api-key KEY           bearer token (default $DROPSERVE_API_KEY)
  --endpoint E            completions (default) | chat
load (closed loop unless --rate)
  --concurrency N         concurrent users, each sending its next request when the last ends (default 1);
                          with --rate: the most requests in flight
  --rate R                open loop: R requests/s ("inf" = all at once)
  --burstiness K          gamma shape of arrival gaps, mean 1/R (1 = Poisson, <1 burstier; default 1)
  --requests N            measured requests (default 100, or unbounded with --duration)
  --duration D            stop sending after D (60, 90s, 2m); in-flight requests finish
  --warmup N              requests sent first and left out of the stats (default 0)
  --users N               spread requests over N OpenAI "user" ids (A/B arms are assigned by user)
prompts
  --dataset random|FILE   random words (default) or JSONL lines {"prompt","max_tokens"?,"stop"?} / {"messages",…}
  --input-len N           random: prompt words, about one token each in Llama vocabularies (default 128)
  --output-len N          max_tokens (random; default for FILE lines without one) (default 128)
  --len-spread F          random: lengths uniform in ±F of the mean (default 0)
  --ignore-eos            send ignore_eos (vLLM extension) so outputs are exactly max_tokens long
  --temperature T         (default 0)
  --seed S                prompts and arrivals (default 0)
measurement
  --slo SPEC              per-request SLO for goodput: ttft_ms:500,tpot_ms:50,e2e_ms:8000
  --timeout D             per-request timeout (default 300s)
  --json FILE             write the report: config, summary, every request
  --baseline FILE         a previous --json report: print baseline, candidate and candidate/baseline
  --quiet                 no progress bar
Token counts are the server's (stream_options.include_usage); without usage, one token per chunk.
TTFT, ITL, TPOT, E2E and goodput follow vllm bench serve. \`dropserve loadtest capacity --help\` for capacity,
\`dropserve loadtest soak --help\` for the soak test.`;

const CAPACITY_HELP = `usage: dropserve loadtest capacity --models A,B,... --slo SPEC [flags]

For each model, raise closed-loop concurrency until the SLO breaks at --slo-percentile, requests fail,
or throughput stops growing; report the most users each one holds, its goodput, its KV bytes/token and
the server's KV budget (from GET /v1/variants when the server has it), and compare with a baseline.

  --url URL[,URL...]      server root (default http://127.0.0.1:8000); with several, the same sweep runs on
                          each server (model by model, servers in turn) and a last table puts users at the
                          SLO side by side, e.g. one
                          --kv-cache-bytes served with --kv-admission worst-case and with on-demand
                          (--json then holds {servers: [{url, label, report}], warnings})
  --models A,B,...        served models / variants to compare (required)
  --baseline NAME         the model the others are compared with (default: the first)
  --slo SPEC              ttft_ms:500[,tpot_ms:50][,e2e_ms:8000] (required)
  --slo-percentile P      50 | 90 | 95 | 99 (default 99)
  --levels 1,2,4,8        concurrency levels, or a geometric series:
  --start N --max N --factor F   (default 1, 64, 2)
  --requests-per-level N  measured requests per level (default max(4 × users, 16))
  --warmup N              unmeasured requests before each model's first level (default 2)
  --saturation-gain F     stop when output tok/s grows less than F over the previous level (default 0.1;
                          --saturation-gain=-1 never stops for saturation)
  --max-error-rate F      failed share a level may have (default 0: any failure stops the sweep)
  --api-key KEY  --endpoint completions|chat  --timeout D  --seed S
  --dataset random|FILE  --input-len N  --output-len N  --len-spread F   (as in dropserve loadtest)
  --respect-eos           do not send ignore_eos (by default capacity fixes output lengths with it, so a
                          variant that stops earlier does not look faster)
  --chart FILE.svg        goodput and TTFT against users, one line per variant
  --json FILE             the full report
  --quiet                 no per-level lines on stderr`;

const PLAN_HELP = `usage: dropserve loadtest plan --capacity capacity.json --target-rps R [flags]

From a \`loadtest capacity --json\` report (one sweep per variant, one SLO): per variant the requests/s
one replica serves at the SLO (the request throughput at the highest concurrency that held it), the
replicas a target load needs, their cost per hour and per million output tokens, and the cheapest
variant whose agreement with the full model clears --min-agreement.

  --capacity FILE         the capacity report (required)
  --target-rps R          requests/s the fleet must serve (required)
  --headroom H            share of measured capacity a replica runs at, in (0, 1] (default 0.7):
                          replicas = ceil(R / (req/s per replica × H))
  --mix SPEC|FILE         planned workload: output=N[,input=N] mean tokens, or a JSONL dataset whose lines
                          all have max_tokens; capacity is rescaled by measured/planned output tokens (an
                          approximation: decode dominates); default: the workload the report measured
  --replica-cost C        cost of one replica: 1.2/h, 0.02/min, 900/month (default: none, rank by replicas)
  --min-agreement F       skip variants whose top-1 agreement with the full model is below F (default 0);
                          agreement comes from the report (server shadow scoring), the full model has 1
  --agreement MODEL=F     set or override a variant's agreement (repeatable)
  --json FILE             write the plan`;

const AB_REPORT_HELP = `usage: dropserve loadtest ab-report --url URL [--url URL …] --experiment NAME [flags]

Fetches GET /v1/experiments/NAME/report from every replica, adds their sufficient statistics (counts,
sums, sums of squares) and prints per arm and metric: control and arm means, arm/control with its 95%
interval (delta method; fidelity: difference), the verdict of the 95% confidence sequence (better,
worse, no detectable difference yet) and the observations behind it, then the guardrails. The merged
figures are those one server fed all the traffic would report. Exit status 1 when a replica fails
or the replicas disagree on the experiment's arms.

  --url URL               a replica's root (repeatable; default http://127.0.0.1:8000)
  --experiment NAME       the experiment (required)
  --api-key KEY           bearer token (default $DROPSERVE_API_KEY)
  --json                  print the merged report as JSON instead of the table`;

const SOAK_HELP = `usage: dropserve loadtest soak --url URL --duration 10m [flags]

A closed loop of workers, each sending its next request when the last ends. Every request picks
streaming or not, completions or chat, and a served model or variant; a share of them is aborted by
the client (before the response, after the first token, or mid-stream). Every request is classified:
ok, aborted, or an error (HTTP status + code, error event in a stream, protocol: bad SSE, missing
[DONE], usage that does not add up; network: reset, timeout). The server's RSS and open fds are
sampled throughout; the summary gives their drift from --drift-from to the end and compares the
harness's counts with the server's dropserve:request_success_total. Exit status 1 when errors exceed
--max-errors (or nothing succeeded).

stop (whichever comes first; in-flight requests finish)
  --duration D            e.g. 10m, 1h (default 10m unless --requests is given)
  --requests N            requests issued
traffic
  --url URL               server root (default http://127.0.0.1:8000)
  --api-key KEY           bearer token (default $DROPSERVE_API_KEY)
  --concurrency N         workers (default 8)
  --variants all|A,B      served ids or variant names, e.g. stories260K,attn-2 (default all of /v1/models)
  --stream-share F        share of streaming requests (default 0.5)
  --chat-share F          share sent to /v1/chat/completions, the rest to /v1/completions (default 0.5)
  --abort-share F         share aborted by the client at a random point (default 0.1)
  --max-tokens N|MIN-MAX  max_tokens, uniform in the range (default 8-64)
  --prompt-words N        random prompt words (default 32)
  --temperature T         (default 0.8)
  --seed S                the request mix and prompts (default 0)
  --timeout D             per request; past it the request is a network error (default 60s)
measurement
  --sample-every D        RSS/fd sample and progress line interval (default 10s)
  --drift-from D          drift is measured from the first sample at or after D (default 2m)
  --pid PID               read RSS and fds from /proc/PID (same machine) instead of the server's
                          /metrics (process_resident_memory_bytes, process_open_fds)
  --max-errors N          errors tolerated before the exit status is 1 (default 0)
  --json FILE             the full report: config, counts, every sample, error details
  --quiet                 no progress lines on stderr`;

const COMMON_OPTIONS = {
  url: { type: 'string', default: 'http://127.0.0.1:8000' },
  'api-key': { type: 'string' },
  endpoint: { type: 'string', default: 'completions' },
  dataset: { type: 'string', default: 'random' },
  'input-len': { type: 'string', default: '128' },
  'output-len': { type: 'string', default: '128' },
  'len-spread': { type: 'string', default: '0' },
  temperature: { type: 'string', default: '0' },
  seed: { type: 'string', default: '0' },
  timeout: { type: 'string', default: '300s' },
  slo: { type: 'string' },
  json: { type: 'string' },
  quiet: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** `dropserve loadtest [capacity] …`; argv is what follows "loadtest". Returns the exit code. */
export async function runLoadtestCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'capacity') return runCapacityCommand(argv.slice(1));
  if (argv[0] === 'soak') return runSoakCommand(argv.slice(1));
  if (argv[0] === 'plan') return runPlanCommand(argv.slice(1));
  if (argv[0] === 'ab-report') return runAbReportCommand(argv.slice(1));
  const values = parseFlags(argv, {
    ...COMMON_OPTIONS,
    model: { type: 'string' },
    concurrency: { type: 'string' },
    rate: { type: 'string' },
    burstiness: { type: 'string', default: '1' },
    requests: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string', default: '0' },
    users: { type: 'string' },
    'ignore-eos': { type: 'boolean', default: false },
    baseline: { type: 'string' },
  });
  if (values.help) {
    console.log(LOADTEST_HELP);
    return 0;
  }
  const baseUrl = values.url as string;
  const apiKey = (values['api-key'] as string | undefined) ?? process.env.DROPSERVE_API_KEY;
  const model = (values.model as string | undefined) ?? (await defaultModel(baseUrl, apiKey));
  const durationS = optional(values.duration, (t) => parseDurationS('duration', t));
  const baseline = values.baseline === undefined ? undefined : await readReport(values.baseline as string);
  const progress = createLoadtestProgressBar(
    process.stderr.isTTY === true && !values.quiet,
    durationS ?? null,
  );
  const report = await withInterrupt((signal) =>
    runLoadtest({
      baseUrl,
      model,
      apiKey,
      endpoint: parseEndpoint(values.endpoint as string),
      dataset: parseDataset(values),
      concurrency: optional(values.concurrency, (t) => positiveInt('concurrency', t)),
      ratePerS: optional(values.rate, (t) => (t === 'inf' ? Number.POSITIVE_INFINITY : positive('rate', t))),
      burstiness: positive('burstiness', values.burstiness as string),
      requests: optional(values.requests, (t) => positiveInt('requests', t)),
      durationS,
      warmup: nonNegativeInt('warmup', values.warmup as string),
      users: optional(values.users, (t) => positiveInt('users', t)),
      slo: optional(values.slo, parseSlo),
      seed: nonNegativeInt('seed', values.seed as string),
      ignoreEos: values['ignore-eos'] as boolean,
      temperature: nonNegative('temperature', values.temperature as string),
      timeoutMs: parseDurationS('timeout', values.timeout as string) * 1000,
      signal,
      onProgress: (p) => progress.onProgress(p),
    }),
  ).finally(() => progress.stop());
  console.log(formatLoadtestReport(report));
  if (baseline) console.log(formatComparison(baseline, report));
  if (values.json) {
    await writeFile(values.json as string, `${JSON.stringify(report, jsonNumbers, 2)}\n`);
    console.error(`wrote ${values.json}`);
  }
  return report.summary.completed === 0 ? 1 : 0;
}

async function runCapacityCommand(argv: string[]): Promise<number> {
  const values = parseFlags(argv, {
    ...COMMON_OPTIONS,
    models: { type: 'string' },
    baseline: { type: 'string' },
    'slo-percentile': { type: 'string', default: '99' },
    levels: { type: 'string' },
    start: { type: 'string', default: '1' },
    max: { type: 'string', default: '64' },
    factor: { type: 'string', default: '2' },
    'requests-per-level': { type: 'string' },
    warmup: { type: 'string', default: '2' },
    'saturation-gain': { type: 'string', default: '0.1' },
    'max-error-rate': { type: 'string', default: '0' },
    'respect-eos': { type: 'boolean', default: false },
    chart: { type: 'string' },
  });
  if (values.help) {
    console.log(CAPACITY_HELP);
    return 0;
  }
  if (values.models === undefined) usageError(`--models is required\n\n${CAPACITY_HELP}`);
  if (values.slo === undefined) usageError(`--slo is required (e.g. ttft_ms:500)\n\n${CAPACITY_HELP}`);
  const models = (values.models as string)
    .split(',')
    .map((m) => m.trim())
    .filter((m) => m !== '');
  const levels =
    values.levels === undefined
      ? geometricLevels(
          positiveInt('start', values.start as string),
          positiveInt('max', values.max as string),
          positive('factor', values.factor as string),
        )
      : (values.levels as string).split(',').map((t) => positiveInt('levels', t.trim()));
  const isQuiet = values.quiet as boolean;
  const percentile = positiveInt('slo-percentile', values['slo-percentile'] as string);
  const urls = (values.url as string)
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  if (urls.length === 0) usageError(`--url needs at least one server root\n\n${CAPACITY_HELP}`);
  const sweep: Omit<CapacityOptions, 'baseUrl'> = {
    models,
    baseline: values.baseline as string | undefined,
    apiKey: (values['api-key'] as string | undefined) ?? process.env.DROPSERVE_API_KEY,
    endpoint: parseEndpoint(values.endpoint as string),
    dataset: parseDataset(values),
    slo: parseSlo(values.slo as string),
    sloPercentile: percentile,
    levels,
    requestsPerLevel: optional(values['requests-per-level'], (t) => positiveInt('requests-per-level', t)),
    warmup: nonNegativeInt('warmup', values.warmup as string),
    seed: nonNegativeInt('seed', values.seed as string),
    ignoreEos: !(values['respect-eos'] as boolean),
    timeoutMs: parseDurationS('timeout', values.timeout as string) * 1000,
    saturationGain: number('saturation-gain', values['saturation-gain'] as string),
    maxErrorRate: nonNegative('max-error-rate', values['max-error-rate'] as string),
    onLevel: (model, level) => {
      if (!isQuiet) console.error(formatCapacityLevel(model, level, percentile));
    },
  };
  if (urls.length > 1) return runCapacityComparisonCommand(urls, sweep, values, isQuiet);
  const report: CapacityReport = await withInterrupt((signal) =>
    runCapacity({ ...sweep, baseUrl: urls[0]!, signal }),
  );
  console.log(formatCapacityReport(report));
  if (values.chart) {
    await writeFile(values.chart as string, renderCapacityChart(report));
    console.error(`wrote ${values.chart}`);
  }
  if (values.json) {
    await writeFile(values.json as string, `${JSON.stringify(report, jsonNumbers, 2)}\n`);
    console.error(`wrote ${values.json}`);
  }
  return 0;
}

/** `loadtest capacity --url A,B,…`: the same sweep on every server, then users at the SLO side by side. */
async function runCapacityComparisonCommand(
  urls: string[],
  sweep: Omit<CapacityOptions, 'baseUrl'>,
  values: FlagValues,
  isQuiet: boolean,
): Promise<number> {
  const comparison = await withInterrupt((signal) =>
    runCapacityComparison({
      ...sweep,
      baseUrls: urls,
      signal,
      onServer: ({ url, label, model }) => {
        if (!isQuiet) console.error(`${model} on server ${label} (${url})`);
      },
    }),
  );
  for (const server of comparison.servers) {
    console.log(`server ${server.label}: ${server.url}`);
    console.log(formatCapacityReport(server.report));
    console.log('');
  }
  console.log(formatCapacityComparison(comparison));
  const merged = mergedForChart(comparison);
  if (values.chart && merged) {
    await writeFile(values.chart as string, renderCapacityChart(merged));
    console.error(`wrote ${values.chart}`);
  }
  if (values.json) {
    await writeFile(values.json as string, `${JSON.stringify(comparison, jsonNumbers, 2)}\n`);
    console.error(`wrote ${values.json}`);
  }
  return 0;
}

async function runPlanCommand(argv: string[]): Promise<number> {
  const values = parseFlags(argv, {
    capacity: { type: 'string' },
    'target-rps': { type: 'string' },
    headroom: { type: 'string', default: '0.7' },
    mix: { type: 'string' },
    'replica-cost': { type: 'string' },
    'min-agreement': { type: 'string', default: '0' },
    agreement: { type: 'string', multiple: true },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    console.log(PLAN_HELP);
    return 0;
  }
  if (values.capacity === undefined) usageError(`--capacity is required\n\n${PLAN_HELP}`);
  if (values['target-rps'] === undefined) usageError(`--target-rps is required\n\n${PLAN_HELP}`);
  const path = values.capacity as string;
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    usageError(`--capacity ${path}: cannot read a JSON report (${(error as Error).message})`);
  }
  const headroom = positive('headroom', values.headroom as string);
  if (headroom > 1) usageError(`--headroom: expected a share in (0, 1], found '${values.headroom}'`);
  const overrides = ((values.agreement as unknown as string[] | undefined) ?? []).map(parseAgreementOverride);
  const plan = planCapacity(parseCapacityReport(json, path), {
    targetRps: positive('target-rps', values['target-rps'] as string),
    headroom,
    replicaCostPerHour: optional(values['replica-cost'], parseReplicaCost) ?? null,
    minAgreement: fraction('min-agreement', values['min-agreement'] as string),
    mix: values.mix === undefined ? null : await readMix(values.mix as string),
    agreementOverrides: Object.fromEntries(overrides),
  });
  console.log(formatCapacityPlan(plan));
  if (values.json) {
    await writeFile(values.json as string, `${JSON.stringify(plan, jsonNumbers, 2)}\n`);
    console.error(`wrote ${values.json}`);
  }
  return plan.chosen === null ? 1 : 0;
}

async function runAbReportCommand(argv: string[]): Promise<number> {
  const values = parseFlags(argv, {
    url: { type: 'string', multiple: true },
    experiment: { type: 'string' },
    'api-key': { type: 'string' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    console.log(AB_REPORT_HELP);
    return 0;
  }
  if (values.experiment === undefined) usageError(`--experiment is required\n\n${AB_REPORT_HELP}`);
  const urls = (values.url as unknown as string[] | undefined) ?? ['http://127.0.0.1:8000'];
  const apiKey = (values['api-key'] as string | undefined) ?? process.env.DROPSERVE_API_KEY;
  let merged: ReturnType<typeof mergeReplicaReports>;
  try {
    const fetched = await fetchExperimentReports(urls, values.experiment as string, { apiKey });
    merged = mergeReplicaReports(fetched);
  } catch (error) {
    console.error(`dropserve loadtest ab-report: ${(error as Error).message}`);
    return 1;
  }
  if (values.json) {
    console.log(JSON.stringify({ ...merged.report, notes: merged.notes }, jsonNumbers, 2));
  } else {
    console.log(formatExperimentReport(merged.report, { ...merged, sources: urls }));
  }
  return 0;
}

/** `--mix output=N[,input=N]`, or a JSONL dataset whose lines all give max_tokens. */
async function readMix(text: string): Promise<PlanMix> {
  const spec = parseMixSpec(text);
  if (spec) return spec;
  const entries = await loadJsonlDataset(text, 'chat');
  const outputs = entries.map((e) => e.maxTokens);
  if (outputs.length === 0 || outputs.some((n) => n === undefined)) {
    usageError(`--mix ${text}: every line needs "max_tokens" (the planned output length)`);
  }
  const meanOutputTokens = (outputs as number[]).reduce((s, n) => s + n, 0) / outputs.length;
  return { meanOutputTokens, meanInputTokens: null, source: `file ${text} (${outputs.length} lines)` };
}

async function runSoakCommand(argv: string[]): Promise<number> {
  const values = parseFlags(argv, {
    url: { type: 'string', default: 'http://127.0.0.1:8000' },
    'api-key': { type: 'string' },
    duration: { type: 'string' },
    requests: { type: 'string' },
    concurrency: { type: 'string', default: '8' },
    variants: { type: 'string', default: 'all' },
    'stream-share': { type: 'string', default: '0.5' },
    'chat-share': { type: 'string', default: '0.5' },
    'abort-share': { type: 'string', default: '0.1' },
    'max-tokens': { type: 'string', default: '8-64' },
    'prompt-words': { type: 'string', default: '32' },
    temperature: { type: 'string', default: '0.8' },
    seed: { type: 'string', default: '0' },
    timeout: { type: 'string', default: '60s' },
    'sample-every': { type: 'string', default: '10s' },
    'drift-from': { type: 'string', default: '2m' },
    pid: { type: 'string' },
    'max-errors': { type: 'string', default: '0' },
    json: { type: 'string' },
    quiet: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    console.log(SOAK_HELP);
    return 0;
  }
  const baseUrl = values.url as string;
  const apiKey = (values['api-key'] as string | undefined) ?? process.env.DROPSERVE_API_KEY;
  const requests = optional(values.requests, (t) => positiveInt('requests', t));
  const durationS =
    optional(values.duration, (t) => parseDurationS('duration', t)) ??
    (requests === undefined ? 600 : undefined);
  const maxTokens = parseTokenRange(values['max-tokens'] as string);
  if (!maxTokens)
    usageError(`--max-tokens: expected N or MIN-MAX (1 <= MIN <= MAX), found '${values['max-tokens']}'`);
  const models = await soakModels(baseUrl, apiKey, values.variants as string);
  const isQuiet = values.quiet as boolean;
  const report = await withInterrupt((signal) =>
    runSoak({
      baseUrl,
      apiKey,
      models,
      concurrency: positiveInt('concurrency', values.concurrency as string),
      durationS,
      requests,
      mix: {
        streamShare: fraction('stream-share', values['stream-share'] as string),
        chatShare: fraction('chat-share', values['chat-share'] as string),
        abortShare: fraction('abort-share', values['abort-share'] as string),
        promptWords: positiveInt('prompt-words', values['prompt-words'] as string),
        maxTokens,
      },
      temperature: nonNegative('temperature', values.temperature as string),
      seed: nonNegativeInt('seed', values.seed as string),
      timeoutMs: parseDurationS('timeout', values.timeout as string) * 1000,
      sampleEveryS: parseDurationS('sample-every', values['sample-every'] as string),
      driftFromS: parseDurationS('drift-from', values['drift-from'] as string),
      pid: optional(values.pid, (t) => positiveInt('pid', t)),
      signal,
      onSample: (sample) => {
        if (!isQuiet) console.error(formatSoakProgress(sample));
      },
    }),
  );
  console.log(formatSoakReport(report));
  if (values.json) {
    await writeFile(values.json as string, `${JSON.stringify(report, jsonNumbers, 2)}\n`);
    console.error(`wrote ${values.json}`);
  }
  const maxErrors = nonNegativeInt('max-errors', values['max-errors'] as string);
  return report.errors > maxErrors || report.outcomes.ok === 0 ? 1 : 0;
}

/** The served ids behind --variants, checked against /v1/models when the server lists them. */
async function soakModels(baseUrl: string, apiKey: string | undefined, variants: string): Promise<string[]> {
  const served = await fetchModelIds(baseUrl, apiKey);
  const requested =
    variants.trim() === 'all'
      ? 'all'
      : variants
          .split(',')
          .map((v) => v.trim())
          .filter((v) => v !== '');
  if (!served || served.length === 0) {
    if (requested === 'all' || requested.length === 0) {
      usageError(`${baseUrl}/v1/models listed no model; pass --variants with served model ids`);
    }
    return requested;
  }
  try {
    return resolveModels(requested === 'all' || requested.length === 0 ? 'all' : requested, served);
  } catch (error) {
    usageError(`--variants: ${(error as Error).message}`);
  }
}

function fraction(name: string, text: string): number {
  const n = number(name, text);
  if (n < 0 || n > 1) usageError(`--${name}: expected a fraction in [0, 1], found '${text}'`);
  return n;
}

type FlagValues = Record<string, string | boolean | undefined>;

function parseFlags(argv: string[], options: NonNullable<ParseArgsConfig['options']>): FlagValues {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as FlagValues;
  } catch (error) {
    usageError(`${(error as Error).message} (dropserve loadtest --help lists the flags)`);
  }
}

function usageError(message: string): never {
  throw new DropserveError('DS_INVALID_ARGUMENT', message);
}

function optional<T>(value: string | boolean | undefined, parse: (text: string) => T): T | undefined {
  return value === undefined ? undefined : parse(value as string);
}

function number(name: string, text: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) usageError(`--${name}: expected a number, found '${text}'`);
  return n;
}

function positive(name: string, text: string): number {
  const n = number(name, text);
  if (!(n > 0)) usageError(`--${name}: expected a number > 0, found '${text}'`);
  return n;
}

function nonNegative(name: string, text: string): number {
  const n = number(name, text);
  if (n < 0) usageError(`--${name}: expected a number >= 0, found '${text}'`);
  return n;
}

function positiveInt(name: string, text: string): number {
  const n = number(name, text);
  if (!(Number.isInteger(n) && n > 0)) usageError(`--${name}: expected a positive integer, found '${text}'`);
  return n;
}

function nonNegativeInt(name: string, text: string): number {
  const n = number(name, text);
  if (!(Number.isInteger(n) && n >= 0)) usageError(`--${name}: expected an integer >= 0, found '${text}'`);
  return n;
}

/** Seconds from "90", "90s", "1.5m" or "500ms". */
export function parseDurationS(name: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) usageError(`--${name}: expected a duration like 60, 90s, 2m or 500ms, found '${text}'`);
  const value = Number(match[1]);
  const seconds = { ms: value / 1000, s: value, m: value * 60, h: value * 3600 }[match[2] ?? 's']!;
  if (!(seconds > 0)) usageError(`--${name}: must be longer than zero, found '${text}'`);
  return seconds;
}

function parseEndpoint(text: string): Endpoint {
  if (text !== 'completions' && text !== 'chat') {
    usageError(`--endpoint: expected completions or chat, found '${text}'`);
  }
  return text;
}

function parseDataset(values: FlagValues): DatasetSpec {
  const outputLen = positiveInt('output-len', values['output-len'] as string);
  if (values.dataset !== 'random') return { kind: 'file', path: values.dataset as string, outputLen };
  const lenSpread = nonNegative('len-spread', values['len-spread'] as string);
  if (lenSpread >= 1)
    usageError(`--len-spread: expected a fraction in [0, 1), found '${values['len-spread']}'`);
  return {
    kind: 'random',
    inputLen: positiveInt('input-len', values['input-len'] as string),
    outputLen,
    lenSpread,
  };
}

async function defaultModel(baseUrl: string, apiKey: string | undefined): Promise<string> {
  const ids = await fetchModelIds(baseUrl, apiKey);
  if (!ids || ids.length === 0) {
    usageError(`--model not given and ${baseUrl}/v1/models listed no model; pass --model NAME`);
  }
  return ids[0]!;
}

async function readReport(path: string): Promise<LoadtestReport> {
  try {
    const report = JSON.parse(await readFile(path, 'utf8')) as LoadtestReport;
    if (!report.summary || !report.config) throw new Error('no summary/config');
    // JSON wrote NaN as null; the comparison treats both as missing.
    return report;
  } catch (error) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--baseline ${path}: not a dropserve loadtest --json report`,
      {
        cause: error,
      },
    );
  }
}

/** JSON has no NaN or Infinity: write null (no data) and "inf" (unbounded rate) instead. */
function jsonNumbers(_key: string, value: unknown): unknown {
  if (typeof value === 'number' && !Number.isFinite(value)) return Number.isNaN(value) ? null : 'inf';
  return value;
}

/** First Ctrl-C stops sending and prints what was measured; a second one exits at once. */
async function withInterrupt<T>(run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const onSigint = (): void => {
    if (controller.signal.aborted) process.exit(130);
    console.error('\ninterrupted: cancelling in-flight requests (Ctrl-C again to quit now)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    return await run(controller.signal);
  } finally {
    process.off('SIGINT', onSigint);
  }
}
