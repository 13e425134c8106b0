import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // 2-core machines: a few files at a time keep socket tests from starving each other
    maxWorkers: 2,
    reporters: ['default'],
  },
});
