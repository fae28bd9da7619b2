import { describe, expect, it } from 'vitest';
import { escapeXml, niceTicks, renderLineChartSvg } from './svg-chart.ts';

/** Minimal XML well-formedness check: balanced tags, quoted attributes, only known entities. */
function assertWellFormedXml(xml: string): void {
  const stack: string[] = [];
  const tokens = xml.match(/<[^>]*>|[^<]+/g) ?? [];
  let roots = 0;
  for (const token of tokens) {
    if (!token.startsWith('<')) {
      expect(token, 'text must not contain raw < or bad entities').not.toMatch(
        /<|&(?!(amp|lt|gt|quot|apos);)/,
      );
      if (stack.length === 0) expect(token.trim()).toBe('');
      continue;
    }
    const selfClosing = token.endsWith('/>');
    const closing = token.startsWith('</');
    const name = /^<\/?([A-Za-z][\w:-]*)/.exec(token)?.[1];
    expect(name, `tag ${token}`).toBeDefined();
    const attrs = token.replace(/^<\/?[\w:-]+/, '').replace(/\/?>$/, '');
    expect(attrs, `attributes of ${token}`).toMatch(/^(\s+[\w:-]+="[^"<]*")*\s*$/);
    if (closing) {
      expect(stack.pop(), `closing ${name}`).toBe(name);
    } else if (!selfClosing) {
      if (stack.length === 0) roots++;
      stack.push(name!);
    } else if (stack.length === 0) {
      roots++;
    }
  }
  expect(stack).toEqual([]);
  expect(roots).toBe(1);
}

describe('renderLineChartSvg', () => {
  const variants = ['stories260K', 'stories260K:attn-2', 'a<b & "c"'];
  const svg = renderLineChartSvg({
    title: 'Capacity at p99 TTFT ≤ 500 ms',
    subtitle: 'random in=128 out=64',
    panels: [
      {
        title: 'Goodput',
        xLabel: 'concurrent users',
        yLabel: 'req/s',
        xScale: 'log2',
        series: variants.map((name, i) => ({
          name,
          points: [1, 2, 4, 8].map((x) => ({ x, y: x * (i + 1) })),
        })),
      },
      {
        title: 'p99 TTFT',
        xLabel: 'concurrent users',
        yLabel: 'ms',
        xScale: 'log2',
        series: variants.map((name, i) => ({
          name,
          points: [1, 2, 4, 8].map((x) => ({ x, y: x === 4 && i === 0 ? Number.NaN : 50 * x })),
        })),
        referenceLines: [{ y: 500, label: 'SLO 500 ms' }],
      },
    ],
  });

  it('is a well-formed SVG document', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    assertWellFormedXml(svg);
    // The document's accessible name is its first child.
    expect(svg.split('\n')[1]).toBe('<title>Capacity at p99 TTFT ≤ 500 ms (random in=128 out=64)</title>');
  });

  it('draws one path per variant in each of the two panels, plus a legend entry per variant', () => {
    expect(svg.match(/<g class="panel"/g)).toHaveLength(2);
    for (const name of variants) {
      const attr = `data-series="${escapeXml(name)}"`;
      expect(svg.split(`<path class="series" ${attr}`).length - 1).toBe(2);
      expect(svg).toContain(`<g class="legend-item" ${attr}>`);
    }
    expect(svg.match(/<path class="series"/g)).toHaveLength(2 * variants.length);
  });

  it('draws axes ticks at the concurrency levels, the SLO line, and breaks a line at a missing point', () => {
    for (const tick of ['1', '2', '4', '8'])
      expect(svg).toContain(`text-anchor="middle" fill="#333333">${tick}</text>`);
    expect(svg).toContain('class="reference"');
    expect(svg).toContain('SLO 500 ms');
    const firstTtftPath = svg.split('<path class="series" data-series="stories260K"')[2]!;
    const d = /d="([^"]*)"/.exec(firstTtftPath)![1]!;
    expect(d.match(/M/g)).toHaveLength(2); // 1 → 2, gap at 4, then 8
    expect(d.match(/L/g)).toHaveLength(1);
  });

  it('chooses round tick steps', () => {
    expect(niceTicks(0, 1, 5)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0, 523, 5)).toEqual([0, 200, 400, 600]);
    expect(niceTicks(0, 37, 5)).toEqual([0, 10, 20, 30, 40]);
  });
});
