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
    // In CI a test gets two more tries: timing on a shared 2-core machine varies, and one
    // slow scheduling must not turn the build red. A test that keeps failing still fails;
    // the report lists every retry (look for "retry" in the log).
    retry: process.env['CI'] ? 2 : 0,
    reporters: ['default'],
  },
});
