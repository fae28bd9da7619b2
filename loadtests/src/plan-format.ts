import type { CapacityPlan } from './plan.ts';
import { num, renderTable } from './report-format.ts';

/** The console table of `dropserve loadtest plan`: one row per variant, then the choice. */
export function formatCapacityPlan(plan: CapacityPlan): string {
  const { config } = plan;
  const rows = plan.variants.map((v) => [
    `${v.model === plan.chosen ? '* ' : '  '}${v.model}`,
    String(v.maxConcurrency),
    num(v.measuredRps),
    num(v.capacityRps),
    v.replicas === null ? '-' : String(v.replicas),
    num(v.costPerHour),
    num(v.costPerMillionOutputTokens, 4),
    v.agreement === null ? '-' : `${v.agreement.toFixed(3)}${v.agreementSource === 'override' ? '*' : ''}`,
    v.excludedBecause ?? 'ok',
  ]);
  const mix = config.mix ? `mix ${config.mix.source}` : `mix as measured (${config.capacityReport.dataset})`;
  return [
    `plan: ${config.targetRps} req/s at ${config.slo}, headroom ${config.headroom}, ${mix}; mean output ${num(plan.meanOutputTokens, 1)} tokens`,
    `capacity report of ${config.capacityReport.startedAt} (commit ${config.capacityReport.commit})`,
    renderTable(
      [
        'variant',
        'users@SLO',
        'req/s measured',
        'req/s/replica',
        'replicas',
        'cost/h',
        'cost/1M out tok',
        'agreement',
        `eligible (agreement ≥ ${config.minAgreement})`,
      ],
      rows,
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
    ),
    'replicas = ceil(target / (req/s/replica × headroom)); * chosen; agreement* from --agreement',
    ...(plan.approximation ? [`approximation: ${plan.approximation}`] : []),
    ...(config.replicaCostPerHour === null ? ['no --replica-cost: ranked by replica count'] : []),
    `choice: ${plan.verdict}`,
  ].join('\n');
}
