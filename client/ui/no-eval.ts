/**
 * Imported first by every page. The pages run under a CSP without
 * 'unsafe-eval'; zod's object parser would otherwise probe `new Function("")`
 * to pick a compiled fast path, and although the probe's error is caught, the
 * browser still reports it as a CSP violation. `jitless` skips the probe.
 */
import { z } from 'zod';

z.config({ jitless: true });
