/** Types for compiled-build.js (plain JS: bin/dropserve.js runs it before any TypeScript loader). */
export function checkCompiledBuild(
  root: string,
  distDir: string,
): { fresh: true } | { fresh: false; reason: string };
