import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExperimentReport } from '../server/experiments/experiment-report.ts';
import type { RunningServer } from '../server/start-server.ts';
import {
  AB_FULL,
  AB_PRUNED,
  driveUntilTripped,
  experimentReport,
  startPrunedAbServer,
} from './support/experiment-traffic.ts';
import { hasChromium, launchChromium, screenshot } from './support/headless-chromium.ts';

/**
 * The dashboard's Experiments section in headless Chromium, against the state the e2e suite
 * reaches (stories260K vs a variant dropping 3 of 5 attention layers, guardrail agreement>=0.85
 * tripped): its verdict line, interval rows and guardrail line agree with the report endpoint.
 * UPDATE_SCREENSHOT=1 writes docs/dashboard-experiments.png.
 */
const withChromium = hasChromium('tests/dashboard-experiments.test.ts');

describe.skipIf(!withChromium)('dashboard: experiment intervals and verdicts', () => {
  let browser: Browser;
  let server: RunningServer;
  beforeAll(async () => {
    browser = await launchChromium();
    server = await startPrunedAbServer();
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close(0);
  });

  it('shows the verdict line, the intervals and the tripped guardrail the report endpoint gives', async () => {
    const { report } = await driveUntilTripped(server, 'ab', AB_PRUNED, 400);
    expect(report.arms.find((a) => a.variant === AB_PRUNED)!.guardrail).not.toBeNull();
    const page = await browser.newPage({ viewport: { width: 1480, height: 1200 } });
    try {
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      await page.goto(`${server.httpUrl}/dashboard?poll_ms=300`);
      await page.waitForFunction(
        () =>
          (
            (globalThis as unknown as { __dashboard: { experiments: unknown[] } }).__dashboard.experiments ??
            []
          ).length === 1,
        undefined,
        { timeout: 30_000, polling: 100 },
      );
      // No traffic runs now, so the page shows exactly the endpoint's current report.
      const now: ExperimentReport = await experimentReport(server, 'ab');
      const arm = now.arms.find((a) => a.variant === AB_PRUNED)!;
      const card = page.locator(`.experiment-arm[data-variant="${AB_PRUNED}"]`);
      const line = (await card.locator('.line').textContent()) ?? '';
      expect(line).toContain(`${AB_PRUNED} vs ${AB_FULL}: `);
      expect(line).toContain('worse agreement');
      expect(line).toContain(`${arm.requests} requests, ${arm.scored_requests} scored`);
      expect(await card.locator('.guardrail').textContent()).toContain(
        `Guardrail agreement>=0.85 tripped at n=${arm.guardrail!.at_n}: drained`,
      );
      const agreementRow = (await card.locator('tr[data-metric="agreement"]').textContent()) ?? '';
      const a = arm.fidelity!.agreement;
      expect(agreementRow).toContain(`[${a.arm_ci95![0].toFixed(3)}, ${a.arm_ci95![1].toFixed(3)}]`);
      expect(agreementRow).toContain('worse');
      const ttft = arm.latency!.ttft_ms;
      const ttftRow = (await card.locator('tr[data-metric="ttft_ms"]').textContent()) ?? '';
      expect(ttftRow).toContain(
        `${ttft.ratio!.toFixed(2)}× [${ttft.ci95![0].toFixed(2)}, ${ttft.ci95![1].toFixed(2)}]`,
      );
      expect(ttftRow).toContain(ttft.verdict);
      expect(pageErrors).toEqual([]);
      expect(existsSync(await screenshot(page, 'dashboard-experiments'))).toBe(true);
    } finally {
      await page.close();
    }
  }, 300_000);
});
