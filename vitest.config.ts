import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    environment: 'node',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Browser and integration tests start real relays on port 0; two cores, so run files two at a time.
    maxWorkers: 2,
    reporters: ['default', './tests/summary-reporter.ts'],
  },
});
