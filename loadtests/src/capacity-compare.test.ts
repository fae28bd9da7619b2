import { describe, expect, it } from 'vitest';
import { comparisonWarnings, runCapacityComparison, serverLabels } from './capacity-compare.ts';

describe('capacity across servers', () => {
  it('labels servers by kv_admission when that tells them apart, else by address', () => {
    const a = { url: 'http://127.0.0.1:8400', kvAdmission: 'worst-case' };
    const b = { url: 'http://127.0.0.1:8401', kvAdmission: 'on-demand' };
    expect(serverLabels([a, b])).toEqual(['worst-case', 'on-demand']);
    expect(serverLabels([a, { ...b, kvAdmission: 'worst-case' }])).toEqual([
      '127.0.0.1:8400',
      '127.0.0.1:8401',
    ]);
    expect(serverLabels([a, { ...b, kvAdmission: null }])).toEqual(['127.0.0.1:8400', '127.0.0.1:8401']);
  });

  it('warns when the budgets or block sizes differ', () => {
    const same = { url: 'a', kvBudgetBytes: 1024, kvBlockTokens: 16 };
    expect(comparisonWarnings([same, { ...same, url: 'b' }])).toEqual([]);
    const warnings = comparisonWarnings([same, { url: 'b', kvBudgetBytes: 2048, kvBlockTokens: 8 }]);
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toContain('KV budgets differ (a: 1.0 KiB, b: 2.0 KiB)');
    expect(warnings[1]).toContain('block sizes differ (a: 16 tokens, b: 8 tokens)');
  });

  it('needs two different servers', async () => {
    const sweep = { models: ['m'], slo: { ttftMs: 100 }, levels: [1] };
    await expect(runCapacityComparison({ ...sweep, baseUrls: ['http://x'] })).rejects.toThrow(/at least two/);
    await expect(runCapacityComparison({ ...sweep, baseUrls: ['http://x', 'http://x'] })).rejects.toThrow(
      /must differ/,
    );
  });
});
