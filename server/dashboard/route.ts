import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Hono } from 'hono';
import type { AppEnv } from '../http/env.ts';

/**
 * GET /dashboard: a static page (HTML + vanilla JS, no build step) that polls /v1/variants and
 * compares every variant with the full model. The chart library, uPlot, is served from its npm
 * package as shipped (dist/uPlot.iife.min.js); when it is not installed the page still shows its
 * tables and says what is missing.
 */
interface Asset {
  /** Absolute path, or null when it cannot be found (uPlot not installed). */
  path: string | null;
  contentType: string;
}

const here = (name: string): string => new URL(`./static/${name}`, import.meta.url).pathname;

function fromPackage(specifier: string): string | null {
  try {
    return createRequire(import.meta.url).resolve(specifier);
  } catch {
    return null;
  }
}

const ASSETS: Record<string, Asset> = {
  'index.html': { path: here('index.html'), contentType: 'text/html; charset=utf-8' },
  'dashboard.js': { path: here('dashboard.js'), contentType: 'text/javascript; charset=utf-8' },
  'dashboard.css': { path: here('dashboard.css'), contentType: 'text/css; charset=utf-8' },
  'vendor/uPlot.iife.min.js': {
    path: fromPackage('uplot/dist/uPlot.iife.min.js'),
    contentType: 'text/javascript; charset=utf-8',
  },
  'vendor/uPlot.min.css': {
    path: fromPackage('uplot/dist/uPlot.min.css'),
    contentType: 'text/css; charset=utf-8',
  },
};

export function dashboardRoute(): Hono<AppEnv> {
  // Files are small and never change while the process runs: read each once.
  const cache = new Map<string, Uint8Array>();
  const serve = (name: string): Response => {
    const asset = ASSETS[name];
    if (!asset?.path) {
      const hint = name.startsWith('vendor/') ? ' (the uplot npm package is not installed)' : '';
      return new Response(`not found: /dashboard/${name}${hint}\n`, {
        status: 404,
        headers: { 'content-type': 'text/plain; charset=utf-8' },
      });
    }
    let body = cache.get(name);
    if (!body) {
      body = readFileSync(asset.path);
      cache.set(name, body);
    }
    return new Response(body, {
      headers: { 'content-type': asset.contentType, 'cache-control': 'no-cache' },
    });
  };
  return new Hono<AppEnv>()
    .get('/dashboard', () => serve('index.html'))
    .get('/dashboard/', () => serve('index.html'))
    .get('/dashboard/:path{.+}', (c) => serve(c.req.param('path')));
}
