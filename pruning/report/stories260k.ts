/**
 * Builds the tables of docs/pruning-stories260K.md: calibrate on the first stories of the shared
 * eval text, evaluate on held-out stories, for every method next to the exhaustive best and median
 * drop set, plus emulation vs plain drop per sublayer. Prints markdown on stdout.
 *
 *   npx tsx pruning/report/stories260k.ts [--samples 64] [--seq-len 512] [--skip-docs 300] > tables.md
 *
 * Uses the same code paths as `dropserve prune plan` / `prune eval` (selectSublayers, fitEmulation,
 * corpusPerplexity), with the CLI's defaults for anything not given here.
 */
import { parseArgs } from 'node:util';
import type { DropSpec } from '../../engine/plan/plan.ts';
import { maskOf } from '../../engine/plan/plan.ts';
import type { MetricName } from '../analyze.ts';
import { analyzeSublayers } from '../analyze.ts';
import { CalibrationLoss } from '../calibration-loss.ts';
import { fitEmulation } from '../emulation-plan.ts';
import { corpusPerplexity } from '../perplexity.ts';
import type { MethodName } from '../select.ts';
import { METHODS, selectSublayers } from '../select.ts';
import type { SublayerKind } from '../sublayers.ts';
import { openReport, REPORT_OPTIONS } from './report-setup.ts';

const { values } = parseArgs({
  options: {
    ...REPORT_OPTIONS,
    permutations: { type: 'string', default: '16' },
  },
});
const permutations = Number(values.permutations);
const { workspace, evalSession, skipDocs, log } = await openReport(values);
const { model, corpus } = workspace;
const { numLayers } = model.config;
const heldOutCache = new Map<string, number>();

/** Held-out perplexity of a spec (memoised for plain drops). */
async function heldOut(spec: DropSpec): Promise<number> {
  const key = spec.emulation ? undefined : `${spec.dropAttention}|${spec.dropMlp}`;
  if (key !== undefined && heldOutCache.has(key)) return heldOutCache.get(key)!;
  const report = await corpusPerplexity(evalSession, model.tokenizer, corpus, maskOf(spec, numLayers), {
    skipDocs,
  });
  if (key !== undefined) heldOutCache.set(key, report.perplexity);
  return report.perplexity;
}

function combinations(n: number, k: number): number[][] {
  if (k === 0) return [[]];
  const out: number[][] = [];
  for (let first = 0; first < n; first++) {
    for (const rest of combinations(n - first - 1, k - 1))
      out.push([first, ...rest.map((r) => r + first + 1)]);
  }
  return out;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (x: number): string => x.toFixed(4);
const specName = (spec: DropSpec): string =>
  [...spec.dropAttention.map((l) => `attn ${l}`), ...spec.dropMlp.map((l) => `mlp ${l}`)].join(', ') ||
  '(none)';

const out: string[] = [];
const heldOutFull = await corpusPerplexity(
  evalSession,
  model.tokenizer,
  corpus,
  maskOf({ dropAttention: [], dropMlp: [] }, numLayers),
  {
    skipDocs,
  },
);
const everything = await corpusPerplexity(
  evalSession,
  model.tokenizer,
  corpus,
  maskOf({ dropAttention: [], dropMlp: [] }, numLayers),
);
const calibrationFull = await workspace.loss.evaluate({ dropAttention: [], dropMlp: [] });
out.push(
  '### Baseline (full model)',
  '',
  '| set | stories | tokens | mean NLL | perplexity |',
  '|---|---:|---:|---:|---:|',
  `| whole file (reference 4.027948) | ${everything.numDocuments} | ${everything.numTokens} | ${everything.meanNll.toFixed(8)} | ${everything.perplexity.toFixed(6)} |`,
  `| calibration: stories 0–${workspace.samples.length - 1}, ≤ ${workspace.seqLen} tokens | ${workspace.samples.length} | ${calibrationFull.numTokens} | ${calibrationFull.meanNll.toFixed(6)} | ${calibrationFull.perplexity.toFixed(4)} |`,
  `| held-out: stories ${skipDocs}–${skipDocs + heldOutFull.numDocuments - 1} | ${heldOutFull.numDocuments} | ${heldOutFull.numTokens} | ${heldOutFull.meanNll.toFixed(6)} | ${heldOutFull.perplexity.toFixed(4)} |`,
  '',
);
log('baselines done');

// Calibration scores of every metric.
out.push(
  '### Calibration scores (lower = more redundant)',
  '',
  '| metric | attention 0..4 | mlp 0..4 |',
  '|---|---|---|',
);
for (const metric of ['cosine', 'angular', 'rel-l2', 'ppl', 'shapley'] as MetricName[]) {
  const a = await analyzeSublayers({ loss: workspace.loss, weights: model.weights }, metric, {
    permutations,
    seed: 0,
  });
  const f = (v: number) => (metric === 'ppl' ? v.toFixed(3) : v.toFixed(4));
  out.push(`| ${metric} | ${a.scores.attention.map(f).join(' · ')} | ${a.scores.mlp.map(f).join(' · ')} |`);
}
out.push('', `(shapley here: all 10 sublayers as players, ${permutations} permutations, seed 0)`, '');
log('scores done');

/** Every method's choice for K sublayers of one kind, against the exhaustive table. */
async function methodTable(kind: SublayerKind, k: number): Promise<void> {
  const sets = combinations(numLayers, k).map((layers) =>
    kind === 'attention' ? { dropAttention: layers, dropMlp: [] } : { dropAttention: [], dropMlp: layers },
  );
  const exhaustive: { spec: DropSpec; ppl: number }[] = [];
  for (const spec of sets) exhaustive.push({ spec, ppl: await heldOut(spec) });
  exhaustive.sort((a, b) => a.ppl - b.ppl);
  const rankOf = (ppl: number) => exhaustive.filter((e) => e.ppl < ppl).length + 1;
  out.push(
    `### Drop ${k} ${kind === 'attention' ? 'attention' : 'MLP'} sublayer${k > 1 ? 's' : ''} (${sets.length} possible sets)`,
    '',
    '| method | chosen | calibration evaluations | held-out ppl | rank of ' + sets.length + ' |',
    '|---|---|---:|---:|---:|',
  );
  const counts = { attention: kind === 'attention' ? k : 0, mlp: kind === 'mlp' ? k : 0 };
  for (const method of METHODS as readonly MethodName[]) {
    // A fresh evaluator per method: its evaluation count is then that method's true search cost.
    const fresh = new CalibrationLoss(workspace.session, workspace.samples);
    const selection = await selectSublayers({ loss: fresh, weights: model.weights }, method, counts, {
      permutations,
      seed: 0,
    });
    const ppl = await heldOut(selection.spec);
    const note =
      method === 'joint' &&
      (kind === 'attention' ? selection.spec.dropMlp.length > 0 : selection.spec.dropAttention.length > 0)
        ? ' (joint picks across kinds: not a pure ' + kind + ' set)'
        : '';
    out.push(
      `| ${method} | ${specName(selection.spec)}${note} | ${selection.evaluations} | ${fmt(ppl)} | ${note ? '—' : rankOf(ppl)} |`,
    );
    log(`${kind} k=${k} ${method}: ${specName(selection.spec)} ${fmt(ppl)}`);
  }
  const best = exhaustive[0]!;
  out.push(
    `| **exhaustive best** | ${specName(best.spec)} | — | ${fmt(best.ppl)} | 1 |`,
    `| median over all sets | — | — | ${fmt(median(exhaustive.map((e) => e.ppl)))} | — |`,
    `| worst set | ${specName(exhaustive[exhaustive.length - 1]!.spec)} | — | ${fmt(exhaustive[exhaustive.length - 1]!.ppl)} | ${sets.length} |`,
    '',
    `All ${sets.length} sets, held-out ppl: ${exhaustive.map((e) => `${specName(e.spec)} ${fmt(e.ppl)}`).join('; ')}`,
    '',
  );
}

await methodTable('attention', 1);
await methodTable('attention', 2);
await methodTable('mlp', 1);

// Emulation vs plain drop, one sublayer at a time.
out.push(
  '### Emulation vs plain drop, one sublayer dropped',
  '',
  `Held-out perplexity (full model ${fmt(heldOutFull.perplexity)}); in brackets, the share of the plain drop's excess perplexity over the full model that the emulation removes. EV = explained variance of the update on calibration tokens (low-rank fits).`,
  '',
  '| sublayer | plain drop | bias | lowrank:4 | lowrank:8 | EV r=4 | EV r=8 |',
  '|---|---:|---:|---:|---:|---:|---:|',
);
for (const kind of ['attention', 'mlp'] as const) {
  for (let layer = 0; layer < numLayers; layer++) {
    const spec: DropSpec =
      kind === 'attention'
        ? { dropAttention: [layer], dropMlp: [] }
        : { dropAttention: [], dropMlp: [layer] };
    const plain = await heldOut(spec);
    const recovered = (ppl: number) =>
      `${fmt(ppl)} (${Math.round(((plain - ppl) / (plain - heldOutFull.perplexity)) * 100) + 0}%)`;
    const bias = await fitEmulation(workspace.session, model.weights, workspace.samples, spec, {
      kind: 'bias',
    });
    const biasPpl = await heldOut({ ...spec, emulation: bias.emulation });
    const cells: string[] = [];
    const ev: string[] = [];
    for (const rank of [4, 8]) {
      const fit = await fitEmulation(workspace.session, model.weights, workspace.samples, spec, {
        kind: 'lowrank',
        rank,
      });
      cells.push(recovered(await heldOut({ ...spec, emulation: fit.emulation })));
      ev.push(Object.values(fit.explainedVariance)[0]!.toFixed(3));
    }
    out.push(
      `| ${kind === 'attention' ? 'attn' : 'mlp'} ${layer} | ${fmt(plain)} | ${recovered(biasPpl)} | ${cells.join(' | ')} | ${ev.join(' | ')} |`,
    );
    log(`emulation ${kind} ${layer} done`);
  }
}
out.push('');
console.log(out.join('\n'));
await evalSession.release();
await workspace.close();
