/**
 * Experiment: where the server allocates during bench:channel's N = 1 round (the client on this
 * process's CPU): the sampling heap profiler, counting the objects the scavenger already collected
 * too, over 20,000 rounds of devmirror (`sys`) or of the protocol floor (`proto`). Prints the
 * estimated bytes a round and the 30 heaviest allocation sites (the last three frames; functions
 * inlined into their callers are counted there).
 *
 *   npm run build && node bench/experiments/round-allocations.mjs [sys|proto]
 *
 * Used in docs/benchmarks.md ("Separate runs").
 */
import inspector from 'node:inspector';
import { fileURLToPath } from 'node:url';
import { openTogether } from './channel-system.mjs';

const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const which = process.argv[2] ?? 'sys';
const subject = await openTogether(root, which === 'sys' ? 'sys' : 'proto');
const session = new inspector.Session();
session.connect();
const post = (method, params) => new Promise((resolve, reject) => session.post(method, params, (e, r) => (e ? reject(e) : resolve(r))));
await post('HeapProfiler.enable');
await post('HeapProfiler.startSampling', { samplingInterval: 32, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
const R = 20_000;
for (let i = 0; i < R; i++) {
  await subject.round();
  if (i % 64 === 63) await new Promise((r) => setImmediate(r));
}
const { profile } = await post('HeapProfiler.stopSampling');
const sites = new Map();
let total = 0;
const walk = (node, stack) => {
  const f = node.callFrame;
  const here = [...stack, `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '').replace('file://', '')}:${f.lineNumber + 1}`];
  if (node.selfSize > 0) {
    const key = here.slice(-3).reverse().join(' < ');
    sites.set(key, (sites.get(key) ?? 0) + node.selfSize);
    total += node.selfSize;
  }
  for (const c of node.children) walk(c, here);
};
walk(profile.head, []);
console.log(`${which}: about ${(total / R).toFixed(0)} bytes a round (sampled)`);
for (const [k, v] of [...sites].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${(v / R).toFixed(0).padStart(6)}  ${k.slice(0, 220)}`);
await subject.close();
process.exit(0);
