import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    environment: 'node',
    // A test's own waits are bounded inside it; this only stops a hung one. 60 s, not 30: on a busy
    // two-core machine (another job beside the suite) tests that spawn processes took over 30 s.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Browser and integration tests start real relays on port 0. Two cores, but with two files at a
    // time they sat half idle (waits on sockets, timers and child processes: 6 m 50 s of CPU in
    // 7 m 10 s on two cores), so three at a time (one run: 7 m 10 s → 5 m 36 s).
    maxWorkers: 3,
    // The files of one worker share the modules they import (the server, zod's schemas, libsodium's
    // start-up, the built page assets) instead of loading them again for each file: the same
    // tests with a third less CPU (18 files: 29.7 → 18.7 CPU s). No test mocks a module or
    // changes a global, and each starts its own relays.
    isolate: false,
    reporters: ['default', './tests/summary-reporter.ts'],
  },
});
