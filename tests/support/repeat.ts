/**
 * `npm run test:repeat -- N [vitest args]`: runs the suite N times (default 10), one line per run
 * and a summary, and exits non-zero if any run failed. A flaky test shows up as a run that fails
 * where the others pass; its name is printed under that run. Extra arguments go to vitest, e.g.
 * `npm run test:repeat -- 20 tests/http-load.test.ts` to hammer one file.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const VITEST = join(ROOT, 'node_modules', '.bin', 'vitest');

/** The parts of vitest's JSON report (Jest's format) this script reads. */
interface JsonReport {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
  testResults: {
    name: string;
    status: string;
    message?: string;
    assertionResults: { fullName: string; status: string; failureMessages?: string[] }[];
  }[];
}

interface RunOutcome {
  isPassed: boolean;
  passed: number;
  failed: number;
  skipped: number;
  seconds: number;
  /** "file > test" for each failure; a file that failed outside any test is listed with its error. */
  failures: string[];
  skippedNames: string[];
}

function parseCount(argv: string[]): { runs: number; vitestArgs: string[] } {
  const [first, ...rest] = argv;
  if (first === undefined || !/^\d+$/.test(first)) return { runs: 10, vitestArgs: argv };
  const runs = Number(first);
  if (runs < 1) throw new RangeError(`the number of runs must be at least 1, got ${first}`);
  return { runs, vitestArgs: rest };
}

/** One `vitest run` with a JSON report; its own console output is kept only to explain a crash. */
function runOnce(reportFile: string, vitestArgs: string[]): Promise<RunOutcome> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(VITEST, ['run', '--reporter=json', `--outputFile=${reportFile}`, ...vitestArgs], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = (performance.now() - started) / 1000;
      let report: JsonReport;
      try {
        report = JSON.parse(readFileSync(reportFile, 'utf8')) as JsonReport;
      } catch {
        resolve({
          isPassed: false,
          passed: 0,
          failed: 0,
          skipped: 0,
          seconds,
          failures: [`vitest exited with ${code} and wrote no report:\n${output}`],
          skippedNames: [],
        });
        return;
      }
      const failures: string[] = [];
      const skippedNames: string[] = [];
      for (const file of report.testResults) {
        const name = relative(ROOT, file.name);
        const failedTests = file.assertionResults.filter((t) => t.status === 'failed');
        for (const t of failedTests) {
          const why = (t.failureMessages?.[0] ?? '').split('\n')[0]!.slice(0, 300);
          failures.push(`${name} > ${t.fullName}${why ? `\n      ${why}` : ''}`);
        }
        for (const t of file.assertionResults) {
          if (t.status === 'pending' || t.status === 'skipped') skippedNames.push(`${name} > ${t.fullName}`);
        }
        if (file.status === 'failed' && failedTests.length === 0) {
          failures.push(`${name}: ${(file.message ?? 'failed').split('\n')[0]}`);
        }
      }
      resolve({
        isPassed: code === 0 && failures.length === 0,
        passed: report.numPassedTests,
        failed: report.numFailedTests,
        skipped: report.numPendingTests + report.numTodoTests,
        seconds,
        failures,
        skippedNames,
      });
    });
  });
}

async function main(): Promise<number> {
  const { runs, vitestArgs } = parseCount(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), 'dropserve-test-repeat-'));
  const outcomes: RunOutcome[] = [];
  try {
    for (let i = 1; i <= runs; i++) {
      const outcome = await runOnce(join(dir, `run-${i}.json`), vitestArgs);
      outcomes.push(outcome);
      const { passed, failed, skipped, seconds } = outcome;
      console.log(
        `run ${i}/${runs}: ${outcome.isPassed ? 'passed' : 'FAILED'} (${passed} passed, ${failed} failed, ${skipped} skipped, ${seconds.toFixed(1)} s)`,
      );
      for (const failure of outcome.failures) console.log(`  ✗ ${failure}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const failedRuns = outcomes.filter((o) => !o.isPassed).length;
  const skippedNames = [...new Set(outcomes.flatMap((o) => o.skippedNames))].sort();
  if (skippedNames.length > 0) {
    console.log(`skipped tests (${skippedNames.length}):`);
    for (const name of skippedNames) console.log(`  - ${name}`);
  }
  console.log(
    failedRuns === 0
      ? `test:repeat: all ${runs} runs passed`
      : `test:repeat: ${failedRuns} of ${runs} runs FAILED`,
  );
  return failedRuns === 0 ? 0 : 1;
}

process.exitCode = await main();
