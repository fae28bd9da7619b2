import { execFileSync } from 'node:child_process';

/**
 * Which code produced a result. Reports carry it so a number can be traced to a commit; inside a
 * container without .git, DROPSERVE_COMMIT (set at image build) stands in.
 */
export function currentCommit(): string {
  const fromEnv = process.env.DROPSERVE_COMMIT;
  if (fromEnv) return fromEnv;
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 2000,
    }).trim();
  } catch {
    return 'unknown';
  }
}
