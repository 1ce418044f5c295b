/**
 * Summarise a V8 .cpuprofile (from `npm run bench -- --profile`, which writes the relay
 * child's profile to $TMPDIR/backdoor-lab-bench-profiles): self time per function and
 * per source file, top entries.
 *
 *   npx tsx bench/profile-summary.ts /tmp/backdoor-lab-bench-profiles/relay-1.cpuprofile [top]
 */
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const file = process.argv[2];
if (!file) throw new Error('usage: profile-summary.ts FILE.cpuprofile [top]');
const top = Number(process.argv[3] ?? 30);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const selfUs = new Map<number, number>();
for (const [i, id] of profile.samples.entries()) selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

const short = (url: string) => url.replace(/^file:\/\/.*?\/(node_modules|server|shared|client|bench)\//, '$1/').replace(/^node:/, 'node:');
const fnKey = (n: Node) => `${n.callFrame.functionName || '(anonymous)'}  ${short(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
const fileKey = (n: Node) => {
  const u = short(n.callFrame.url);
  if (!u) return n.callFrame.functionName; // (garbage collector), (program), (idle)
  const m = /^(node_modules\/[^/]+|[^/]+\/[^/]+)/.exec(u);
  return m ? m[1]! : u;
};

/** Inclusive time per function: self time of every node under it, counted once per stack. */
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const seen = new Set<string>();
  let cur: number | undefined = id;
  while (cur !== undefined) {
    const key = fnKey(byId.get(cur)!);
    if (!seen.has(key)) {
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
    cur = parent.get(cur);
  }
}

function report(title: string, map: Map<string, number>): void {
  console.log(`\n${title}`);
  for (const [k, us] of [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((us / total) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`);
  }
}

const selfFn = new Map<string, number>();
const selfFile = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  selfFn.set(fnKey(n), (selfFn.get(fnKey(n)) ?? 0) + us);
  selfFile.set(fileKey(n), (selfFile.get(fileKey(n)) ?? 0) + us);
}
console.log(`profile ${file}: ${(total / 1000).toFixed(0)} ms sampled`);
report('self time by file', selfFile);
report('self time by function', selfFn);
report('inclusive time by function', inclusive);
