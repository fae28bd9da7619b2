import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';

/** The system Chromium the dashboard tests drive (apt-get install chromium). */
export const CHROMIUM = '/usr/bin/chromium';

/** Whether Chromium is installed; when it is not, says which test file is skipped. */
export function hasChromium(testFile: string): boolean {
  const found = existsSync(CHROMIUM);
  if (!found) console.warn(`${testFile} skipped: ${CHROMIUM} not found (apt-get install chromium)`);
  return found;
}

/** Headless Chromium; Playwright gives every launch a fresh temporary profile. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Screenshots the whole page as docs/NAME.png when UPDATE_SCREENSHOT=1 (refreshing the README's
 * picture), else into the temp dir so that `npm test` leaves the checkout clean. Returns the path.
 */
export async function screenshot(page: Page, name: string): Promise<string> {
  const path = process.env.UPDATE_SCREENSHOT
    ? resolve(process.cwd(), `docs/${name}.png`)
    : join(tmpdir(), `dropserve-${name}-${process.pid}.png`);
  mkdirSync(resolve(path, '..'), { recursive: true });
  await page.screenshot({ path, fullPage: true });
  return path;
}
