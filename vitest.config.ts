import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // 2-core machines: a few files at a time keep socket tests from starving each other
    maxWorkers: 2,
    // No retries, in CI or not: a test that fails once is a failure to fix (a retry would hide
    // a flaky test, or a real race, behind a green build).
    retry: 0,
    reporters: ['default'],
  },
});
