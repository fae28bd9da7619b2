import type { CapacityReport } from './capacity.ts';
import { formatSlo } from './slo.ts';
import { statAtPercentile } from './stats.ts';
import { type ChartSpec, renderLineChartSvg } from './svg-chart.ts';

/**
 * The capacity sweep as a two-panel chart: goodput and TTFT (at the SLO percentile) against
 * concurrency, one line per variant, with the TTFT SLO as a dashed line.
 */
export function capacityChartSpec(report: CapacityReport): ChartSpec {
  const p = report.config.sloPercentile;
  const slo = report.config.slo;
  return {
    title: `Capacity at ${formatSlo(slo, p)}`,
    subtitle: `${report.config.dataset}; commit ${report.commit}; ${report.startedAt}`,
    panels: [
      {
        title: 'Goodput (requests/s meeting the SLO)',
        xLabel: 'concurrent users',
        yLabel: 'goodput (req/s)',
        xScale: 'log2',
        series: report.variants.map((v) => ({
          name: v.model,
          points: v.levels.map((l) => ({ x: l.concurrency, y: l.summary.goodput ?? Number.NaN })),
        })),
      },
      {
        title: `p${p} time to first token`,
        xLabel: 'concurrent users',
        yLabel: `p${p} TTFT (ms)`,
        xScale: 'log2',
        series: report.variants.map((v) => ({
          name: v.model,
          points: v.levels.map((l) => ({ x: l.concurrency, y: statAtPercentile(l.summary.ttftMs, p) })),
        })),
        referenceLines: slo.ttftMs === undefined ? [] : [{ y: slo.ttftMs, label: `SLO ${slo.ttftMs} ms` }],
      },
    ],
  };
}

export function renderCapacityChart(report: CapacityReport): string {
  return renderLineChartSvg(capacityChartSpec(report));
}
