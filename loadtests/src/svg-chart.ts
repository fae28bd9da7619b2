/**
 * A small line-chart SVG writer: panels side by side sharing one legend, one <path> per series per
 * panel, optional dashed reference lines (an SLO). No dependencies; the output is plain SVG 1.1
 * that browsers, GitHub and Inkscape render alike.
 */

export interface ChartPoint {
  x: number;
  /** NaN leaves a gap in the line (e.g. a level where no request succeeded). */
  y: number;
}

export interface ChartSeries {
  name: string;
  points: ChartPoint[];
}

export interface ChartPanel {
  title: string;
  xLabel: string;
  yLabel: string;
  /** log2 suits concurrency sweeps (1, 2, 4, …). Default linear. */
  xScale?: 'linear' | 'log2';
  series: ChartSeries[];
  referenceLines?: { y: number; label: string }[];
}

export interface ChartSpec {
  title: string;
  subtitle?: string;
  panels: ChartPanel[];
  /** Whole image width in px. Default 480 per panel. */
  width?: number;
  /** Plot area height in px. Default 300. */
  plotHeight?: number;
}

// Okabe–Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

const MARGIN = { left: 64, right: 20, top: 34, bottom: 50 };
const HEADER_HEIGHT = 72;

export function renderLineChartSvg(spec: ChartSpec): string {
  const panelCount = Math.max(1, spec.panels.length);
  const width = spec.width ?? 480 * panelCount;
  const plotHeight = spec.plotHeight ?? 300;
  const panelWidth = width / panelCount;
  const height = HEADER_HEIGHT + MARGIN.top + plotHeight + MARGIN.bottom;
  const names = uniqueSeriesNames(spec.panels);
  const color = (name: string): string => PALETTE[names.indexOf(name) % PALETTE.length]!;

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`,
    // An accessible name: screen readers (and biome's a11y lint on committed charts) need a <title>.
    `<title>${escapeXml(spec.subtitle ? `${spec.title} (${spec.subtitle})` : spec.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="16" font-weight="600">${escapeXml(spec.title)}</text>`,
  ];
  if (spec.subtitle) {
    parts.push(
      `<text x="${width / 2}" y="40" text-anchor="middle" fill="#555555">${escapeXml(spec.subtitle)}</text>`,
    );
  }
  parts.push(renderLegend(names, color, width));
  spec.panels.forEach((panel, i) => {
    parts.push(renderPanel(panel, i * panelWidth, HEADER_HEIGHT, panelWidth, plotHeight, color));
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function uniqueSeriesNames(panels: readonly ChartPanel[]): string[] {
  const names: string[] = [];
  for (const panel of panels) for (const s of panel.series) if (!names.includes(s.name)) names.push(s.name);
  return names;
}

function renderLegend(names: readonly string[], color: (name: string) => string, width: number): string {
  const itemWidths = names.map((name) => 48 + name.length * 7);
  const total = itemWidths.reduce((a, b) => a + b, 0);
  let x = Math.max(8, (width - total) / 2);
  const items = names.map((name, i) => {
    const item =
      `<g class="legend-item" data-series="${escapeXml(name)}">` +
      `<line x1="${fmt(x)}" y1="58" x2="${fmt(x + 22)}" y2="58" stroke="${color(name)}" stroke-width="3"/>` +
      `<text x="${fmt(x + 27)}" y="62">${escapeXml(name)}</text></g>`;
    x += itemWidths[i]!;
    return item;
  });
  return `<g class="legend">${items.join('')}</g>`;
}

interface Scale {
  toPx(value: number): number;
  ticks: number[];
}

function renderPanel(
  panel: ChartPanel,
  left: number,
  top: number,
  panelWidth: number,
  plotHeight: number,
  color: (name: string) => string,
): string {
  const plotWidth = panelWidth - MARGIN.left - MARGIN.right;
  const x0 = MARGIN.left;
  const y0 = MARGIN.top;
  const points = panel.series
    .flatMap((s) => s.points)
    .filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const xs = points.map((p) => p.x);
  // Headroom above a reference line, so an SLO at the top of the data does not sit on the frame.
  const ys = [...points.map((p) => p.y), ...(panel.referenceLines ?? []).map((r) => r.y * 1.1)];
  const isLog = panel.xScale === 'log2' && xs.length > 0 && xs.every((x) => x > 0);
  const xScale = isLog ? log2Scale(xs, x0, x0 + plotWidth) : linearScale(xs, x0, x0 + plotWidth, false);
  const yScale = linearScale(ys, y0 + plotHeight, y0, true);

  const out: string[] = [`<g class="panel" transform="translate(${fmt(left)},${fmt(top)})">`];
  out.push(
    `<text x="${fmt(x0 + plotWidth / 2)}" y="${y0 - 12}" text-anchor="middle" font-size="13" font-weight="600">${escapeXml(panel.title)}</text>`,
  );
  for (const tick of yScale.ticks) {
    const y = fmt(yScale.toPx(tick));
    out.push(`<line x1="${x0}" y1="${y}" x2="${fmt(x0 + plotWidth)}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(
      `<text x="${x0 - 6}" y="${y}" dy="4" text-anchor="end" fill="#333333">${formatTick(tick)}</text>`,
    );
  }
  for (const tick of xScale.ticks) {
    const x = fmt(xScale.toPx(tick));
    out.push(
      `<line x1="${x}" y1="${y0 + plotHeight}" x2="${x}" y2="${y0 + plotHeight + 5}" stroke="#333333"/>`,
    );
    out.push(
      `<text x="${x}" y="${y0 + plotHeight + 18}" text-anchor="middle" fill="#333333">${formatTick(tick)}</text>`,
    );
  }
  out.push(
    `<rect class="frame" x="${x0}" y="${y0}" width="${fmt(plotWidth)}" height="${plotHeight}" fill="none" stroke="#333333"/>`,
  );
  out.push(
    `<text x="${fmt(x0 + plotWidth / 2)}" y="${y0 + plotHeight + 38}" text-anchor="middle">${escapeXml(panel.xLabel)}</text>`,
  );
  const yLabelY = y0 + plotHeight / 2;
  out.push(
    `<text x="16" y="${fmt(yLabelY)}" text-anchor="middle" transform="rotate(-90 16 ${fmt(yLabelY)})">${escapeXml(panel.yLabel)}</text>`,
  );
  for (const ref of panel.referenceLines ?? []) {
    const y = fmt(yScale.toPx(ref.y));
    out.push(
      `<line class="reference" x1="${x0}" y1="${y}" x2="${fmt(x0 + plotWidth)}" y2="${y}" stroke="#B00020" stroke-dasharray="6 4"/>`,
    );
    out.push(
      `<text x="${fmt(x0 + plotWidth - 4)}" y="${y}" dy="-4" text-anchor="end" fill="#B00020">${escapeXml(ref.label)}</text>`,
    );
  }
  for (const series of panel.series) {
    const stroke = color(series.name);
    out.push(
      `<path class="series" data-series="${escapeXml(series.name)}" d="${pathData(series.points, xScale, yScale)}" fill="none" stroke="${stroke}" stroke-width="2" stroke-linejoin="round"/>`,
    );
    for (const p of series.points) {
      if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) continue;
      out.push(
        `<circle cx="${fmt(xScale.toPx(p.x))}" cy="${fmt(yScale.toPx(p.y))}" r="3" fill="${stroke}"><title>${escapeXml(`${series.name}: (${formatTick(p.x)}, ${formatTick(p.y)})`)}</title></circle>`,
      );
    }
  }
  out.push('</g>');
  return out.join('\n');
}

/** "M x y L x y …", starting a new subpath after a missing point. */
function pathData(points: readonly ChartPoint[], xScale: Scale, yScale: Scale): string {
  const commands: string[] = [];
  let isPenDown = false;
  for (const p of [...points].sort((a, b) => a.x - b.x)) {
    if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) {
      isPenDown = false;
      continue;
    }
    commands.push(`${isPenDown ? 'L' : 'M'}${fmt(xScale.toPx(p.x))} ${fmt(yScale.toPx(p.y))}`);
    isPenDown = true;
  }
  // An all-missing series still gets a (empty) path so every series is present in every panel.
  return commands.join(' ') || 'M0 0';
}

function linearScale(values: readonly number[], fromPx: number, toPx: number, isFromZero: boolean): Scale {
  let lo = values.length === 0 ? 0 : Math.min(...values);
  let hi = values.length === 0 ? 1 : Math.max(...values);
  if (isFromZero) lo = Math.min(0, lo);
  if (hi === lo) hi = lo + 1;
  const ticks = niceTicks(lo, hi, 5);
  const domainLo = Math.min(lo, ticks[0]!);
  const domainHi = Math.max(hi, ticks[ticks.length - 1]!);
  return {
    toPx: (v) => fromPx + ((v - domainLo) / (domainHi - domainLo)) * (toPx - fromPx),
    ticks,
  };
}

function log2Scale(values: readonly number[], fromPx: number, toPx: number): Scale {
  const lo = Math.log2(Math.min(...values));
  let hi = Math.log2(Math.max(...values));
  if (hi === lo) hi = lo + 1;
  const ticks: number[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    const tick = 2 ** e;
    if (Math.log2(tick) >= lo - 1e-9 && Math.log2(tick) <= hi + 1e-9) ticks.push(tick);
  }
  return {
    toPx: (v) => fromPx + ((Math.log2(v) - lo) / (hi - lo)) * (toPx - fromPx),
    ticks,
  };
}

/** Round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, targetCount: number): number[] {
  const rawStep = (hi - lo) / Math.max(1, targetCount);
  const magnitude = 10 ** Math.floor(Math.log10(rawStep));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rawStep) ?? 10 * magnitude;
  const first = Math.floor(lo / step) * step;
  const ticks: number[] = [];
  for (let t = first; t < hi + step * 0.999; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function formatTick(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(3)));
}

function fmt(v: number): string {
  return String(Math.round(v * 10) / 10);
}

export function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}
