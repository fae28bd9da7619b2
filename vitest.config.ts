import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['node_modules/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: heavy ORT suites run in separate forks, two at a time.
    pool: 'forks',
    maxWorkers: 2,
  },
});
