/**
 * The emulation table of docs/pruning-stories260K.md: plain drop vs the old full-model fit
 * (`--emulate-fit full`) vs the sequential fit (`--emulate-fit sequential`, the default), on stories
 * the fit never saw. Calibration = the first `--samples` stories (the sequential fit fits on the
 * first three quarters of them and gates on the last quarter); held-out = stories from
 * `--skip-docs` on. Plans: best cosine and ppl-greedy sets of 1, 2, 3 attention sublayers and of 1 MLP.
 *
 *   npx tsx pruning/report/emulation-heldout.ts [--samples 64] [--seq-len 512] [--skip-docs 300] > table.md
 *
 * Prints markdown on stdout, progress on stderr. `--targets` adds the 'stream' fit target
 * (sequential-emulation.ts) as an extra column, for the comparison that chose 'block';
 * `--without-refit` keeps the emulations fitted on the fit split only.
 */
import { parseArgs } from 'node:util';
import type { DropSpec } from '../../engine/plan/plan.ts';
import { maskOf } from '../../engine/plan/plan.ts';
import { CalibrationLoss } from '../calibration-loss.ts';
import type { EmulationChoice } from '../emulation-plan.ts';
import { describeEmulation, fitEmulation } from '../emulation-plan.ts';
import { corpusPerplexity } from '../perplexity.ts';
import type { MethodName } from '../select.ts';
import { selectSublayers } from '../select.ts';
import type { SequentialFit } from '../sequential-emulation.ts';
import { fitEmulationSequentially } from '../sequential-emulation.ts';
import { sublayerName } from '../sublayers.ts';
import { openReport, REPORT_OPTIONS } from './report-setup.ts';

const { values } = parseArgs({
  options: {
    ...REPORT_OPTIONS,
    rank: { type: 'string', default: '8' },
    targets: { type: 'boolean', default: false },
    'without-refit': { type: 'boolean', default: false },
  },
});
const refit = !values['without-refit'];
const { workspace, evalSession, skipDocs, log } = await openReport(values);
const { model, corpus } = workspace;
const { numLayers } = model.config;
const fmt = (x: number): string => x.toFixed(4);

async function heldOut(spec: DropSpec): Promise<number> {
  return (await corpusPerplexity(evalSession, model.tokenizer, corpus, maskOf(spec, numLayers), { skipDocs }))
    .perplexity;
}

// The plans: each method's choice, deduplicated (several methods often agree).
const plans = new Map<string, { spec: DropSpec; methods: string[] }>();
const cases: { kind: 'attention' | 'mlp'; k: number }[] = [
  { kind: 'attention', k: 1 },
  { kind: 'attention', k: 2 },
  { kind: 'attention', k: 3 },
  { kind: 'mlp', k: 1 },
];
for (const { kind, k } of cases) {
  for (const method of ['cosine', 'ppl-greedy'] as MethodName[]) {
    const loss = new CalibrationLoss(workspace.session, workspace.samples);
    const counts = { attention: kind === 'attention' ? k : 0, mlp: kind === 'mlp' ? k : 0 };
    const { spec } = await selectSublayers({ loss, weights: model.weights }, method, counts);
    const key = `${spec.dropAttention.map((l) => `attn ${l}`).join(' + ')}${spec.dropMlp.map((l) => `mlp ${l}`).join(' + ')}`;
    const entry = plans.get(key) ?? { spec, methods: [] };
    entry.methods.push(`${method} ${kind === 'attention' ? 'attn' : 'mlp'}:${k}`);
    plans.set(key, entry);
  }
}
log(`plans: ${[...plans.keys()].join('; ')}`);

const full = await heldOut({ dropAttention: [], dropMlp: [] });
const choices: Exclude<EmulationChoice, { kind: 'none' }>[] = [
  { kind: 'bias' },
  { kind: 'lowrank', rank: Number(values.rank) },
];

const decisionText = (fit: SequentialFit): string =>
  fit.decisions
    .map(
      (d) =>
        `${sublayerName(d.sublayer)}: ${d.kept ? `kept (λ ${d.ridge})` : 'plain'} ${d.validationNllPlain.toFixed(4)}→${d.validationNllEmulated.toFixed(4)}`,
    )
    .join('; ');

const out: string[] = [
  `Held-out perplexity on stories ${skipDocs}– (full model ${fmt(full)}). Full fit: all ${workspace.samples.length} calibration stories, full-model activations. Sequential: fitted inside the pruned network on stories 0–${workspace.samples.length - Math.max(1, Math.floor(workspace.samples.length / 4)) - 1}, ridge and gate chosen on stories ${workspace.samples.length - Math.max(1, Math.floor(workspace.samples.length / 4))}–${workspace.samples.length - 1}${refit ? `, each kept emulation then refit on all ${workspace.samples.length} with the chosen ridge before the next sublayer is fitted` : ' (no refit)'}. Gate: per sublayer in depth order, validation NLL plain → best emulated (kept only if lower).`,
  '',
  `| plan | chosen by | emulation | plain | full fit | sequential | seq. ≤ plain |${values.targets ? ' seq., stream target |' : ''} gate decisions |`,
  `|---|---|---|---:|---:|---:|:---:|${values.targets ? '---:|' : ''}---|`,
];
let allHeld = true;
for (const [name, { spec, methods }] of plans) {
  const plain = await heldOut(spec);
  for (const choice of choices) {
    const old = await fitEmulation(workspace.session, model.weights, workspace.samples, spec, choice);
    const oldPpl = await heldOut({ ...spec, emulation: old.emulation });
    const seq = await fitEmulationSequentially(
      workspace.session,
      model.weights,
      workspace.samples,
      spec,
      choice,
      { refit },
    );
    const seqPpl = await heldOut({ ...spec, emulation: seq.emulation });
    const holds = seqPpl <= plain;
    allHeld &&= holds;
    let streamCell = '';
    if (values.targets) {
      const stream = await fitEmulationSequentially(
        workspace.session,
        model.weights,
        workspace.samples,
        spec,
        choice,
        {
          target: 'stream',
          refit,
        },
      );
      streamCell = ` ${fmt(await heldOut({ ...spec, emulation: stream.emulation }))} |`;
    }
    out.push(
      `| ${name} | ${methods.join(', ')} | ${describeEmulation(choice)} | ${fmt(plain)} | ${fmt(oldPpl)} | ${fmt(seqPpl)} | ${holds ? 'yes' : '**no**'} |${streamCell} ${decisionText(seq)} |`,
    );
    log(
      `${name} ${describeEmulation(choice)}: plain ${fmt(plain)} full ${fmt(oldPpl)} sequential ${fmt(seqPpl)}`,
    );
  }
}
out.push('', `Sequential ≤ plain on held-out text in every row: ${allHeld ? 'yes' : 'no'}.`, '');
console.log(out.join('\n'));
await evalSession.release();
await workspace.close();
