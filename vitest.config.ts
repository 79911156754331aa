import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/src/**/*.test.ts', 'bench/**/*.test.ts', 'deploy/**/*.test.ts'],
    // Integration tests share one Docker Engine on a 2-core machine: run files one at a time
    // so timings stay sane and each file's leak check sees only its own objects.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 180_000,
    globalSetup: ['packages/server/src/test-support/global-setup.ts'],
    setupFiles: ['packages/server/src/test-support/leak-check.ts'],
  },
});
