import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    environment: 'node',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Browser and integration tests start real relays on port 0. Two cores, but with two files at a
    // time they sat half idle (waits on sockets, timers and child processes: 6 m 50 s of CPU in
    // 7 m 10 s on two cores), so three at a time (one run: 7 m 10 s → 5 m 36 s).
    maxWorkers: 3,
    reporters: ['default', './tests/summary-reporter.ts'],
  },
});
