/**
 * `devmirror soak` and `devmirror replay`: argument parsing and the printed summaries.
 */
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { isReproFile } from '../explore/explore.js';
import { replayExploreMain } from '../explore/cli.js';
import { DevmirrorError } from '../errors.js';
import { DEFAULT_SOAK, runSoak, type SoakReport } from './soak.js';
import { replaySoak, type ReplayReport } from './replay.js';
import type { BugMode } from '../devices/protocol.js';

export const SOAK_USAGE = `usage: devmirror soak [options]
  --minutes N        how long to run (default 1; fractions allowed)
  --seed N           random seed (default: time-based, printed)
  --record FILE      where the record goes (default reports/soak-SEED.jsonl; "none" for no record)
  --json FILE        also write the summary as JSON
  --check-every S    checkpoint period in seconds (default 15)
  --deadline-ms N    acknowledgement deadline before a device is evicted (default 2000)
  --memory-mb N      emulated RAM (default 64)
  --dma-rate N       DMA accesses per second per device (default 200)
  --fault-every N    about one injected fault per N operations (default 120)
  --no-faults        inject no faults
  --no-external      worker devices only (no client processes)
  --bug ROLE:MODE    make one role buggy, to see the checks catch it (e.g. gpu-w:ack-before-quiesce)
  --trace FILE       record a trace and write it here at the end (Chrome trace JSON: open it in
                     https://ui.perfetto.dev, docs/trace.md); the newest 50000 entries
exits 1 if any check failed; the record names the operation each problem was found at, and
\`devmirror replay FILE\` runs it again.`;

export const REPLAY_USAGE = `usage: devmirror replay FILE [--runs N] [--json FILE]
  re-runs a soak record's operations and injected faults with its seed, N times (default 3), and
  reports how often its problems come back; exits 1 if any run had a problem`;

function num(name: string, v: string | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new DevmirrorError('DM_ERR_VALIDATION', `${name} must be a number >= ${min}, got "${v}"\n${SOAK_USAGE}`);
  return n;
}

const line = (s: string): boolean => process.stdout.write(s + '\n');
const kv = (o: Record<string, number>): string =>
  Object.entries(o)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || 'none';

export function printSoak(r: SoakReport): void {
  line('');
  line(`soak ${r.ok ? 'PASSED' : 'FAILED'}: seed ${r.seed}, ${(r.durationMs / 1000).toFixed(0)} s`);
  line(`  operations      ${r.operations} (${r.skipped} skipped: their target was gone): ${kv(r.operationsByKind)}`);
  line(`  invalidations   ${r.invalidations}: ${kv(r.invalidationsByEvent)}`);
  line(`  longest         ${r.maxInvalidationMs} ms (bound ${r.deadlineBoundMs} ms)`);
  const injected = Object.values(r.faultsInjected).reduce((s, v) => s + v, 0);
  line(`  faults          ${injected} injected (${kv(r.faultsInjected)}), ${r.faultsSurvived} survived; ${r.deviceIncarnations} device incarnations; ${r.unplannedEvictions} evictions without an injected fault`);
  line(`  verified        ${r.pagesVerified} page loads against the model, ${r.deviceWritesVerified} device-written pages against their journal, ${r.sanitizerChecked} device accesses by the sanitizer, ${r.checks} checkpoints`);
  line(`  findings        ${kv(r.findings)}`);
  const m = r.rss;
  line(
    `  memory          ${m.warmupMb ? `trend ${m.warmupMb} -> ${m.endMb} MiB after the warm-up (${m.growthPct >= 0 ? '+' : ''}${m.growthPct}%, ${m.samples} samples; medians of the first and last three ${m.firstMb} and ${m.lastMb} MiB)` : `${m.endMb} MiB at the end (fewer than 4 samples after the warm-up: no growth figure)`}; client processes ${m.clientsEndMb} MiB`,
  );
  line(`  problems        ${kv(r.problemsByCategory)}`);
  for (const p of r.problems.slice(0, 10)) line(`    [${p.category}] at operation ${p.op}: ${p.detail}`);
  if (r.record) line(`  record          ${r.record}${r.ok ? '' : ` (replay: devmirror replay ${r.record})`}`);
}

export function printReplay(r: ReplayReport): void {
  line('');
  line(`replay of ${r.file}: seed ${r.seed}, ${r.operations} operations`);
  line(`  recorded problems: ${kv(r.recorded)}`);
  r.runs.forEach((x, n) => line(`  run ${n + 1}: ${x.ok ? 'clean' : kv(x.problemsByCategory)} (${(x.durationMs / 1000).toFixed(0)} s)${x.firstProblem ? `; first: ${x.firstProblem}` : ''}`));
  const what = Object.keys(r.recorded).length ? 'the recorded problems came back' : 'the run was clean again';
  line(`  ${what} in ${r.reproduced} of ${r.runs.length} runs`);
}

export async function soakMain(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      minutes: { type: 'string' },
      seed: { type: 'string' },
      record: { type: 'string' },
      json: { type: 'string' },
      trace: { type: 'string' },
      'check-every': { type: 'string' },
      'deadline-ms': { type: 'string' },
      'memory-mb': { type: 'string' },
      'dma-rate': { type: 'string' },
      'fault-every': { type: 'string' },
      'no-faults': { type: 'boolean' },
      'no-external': { type: 'boolean' },
      bug: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    line(SOAK_USAGE);
    return 0;
  }
  const seed = Math.floor(num('--seed', values.seed, Date.now() % 1_000_000_007, 0));
  const record = values.record === 'none' ? null : (values.record ?? `reports/soak-${seed}.jsonl`);
  let bug: { role: string; mode: BugMode } | null = null;
  if (values.bug) {
    const m = /^([a-z]+-[wx]):(.+)$/.exec(values.bug);
    if (!m) throw new DevmirrorError('DM_ERR_VALIDATION', `--bug must be ROLE:MODE, e.g. gpu-w:ack-before-quiesce\n${SOAK_USAGE}`);
    bug = { role: m[1], mode: m[2] as BugMode };
  }
  const minutes = num('--minutes', values.minutes, 1, 0.05);
  line(`devmirror soak: seed ${seed}, ${minutes} min${record ? `, record ${record}` : ''}`);
  const r = await runSoak({
    durationMs: minutes * 60_000,
    seed,
    record,
    bug,
    checkEveryMs: num('--check-every', values['check-every'], DEFAULT_SOAK.checkEveryMs / 1000, 1) * 1000,
    deadlineMs: num('--deadline-ms', values['deadline-ms'], DEFAULT_SOAK.deadlineMs, 10),
    memoryMb: num('--memory-mb', values['memory-mb'], DEFAULT_SOAK.memoryMb, 16),
    dma: { ...DEFAULT_SOAK.dma, rate: num('--dma-rate', values['dma-rate'], DEFAULT_SOAK.dma.rate, 0) },
    faultEvery: num('--fault-every', values['fault-every'], DEFAULT_SOAK.faultEvery, 1),
    faults: !values['no-faults'],
    external: !values['no-external'],
    trace: values.trace ?? null,
    progress: (s) => line(`  ${s}`),
  });
  printSoak(r);
  if (values.json) writeFileSync(values.json, JSON.stringify(r, null, 2));
  return r.ok ? 0 : 1;
}

export async function replayMain(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { runs: { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  if (values.help) {
    line(REPLAY_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new DevmirrorError('DM_ERR_VALIDATION', `give one record file\n${REPLAY_USAGE}`);
  const runs = Math.floor(num('--runs', values.runs, 3, 1));
  // An explorer reproduction replays step for step; a soak record re-runs its operations.
  if (isReproFile(positionals[0])) return replayExploreMain(positionals[0], runs);
  const r = await replaySoak(positionals[0], runs, (s) => line(`  ${s}`));
  printReplay(r);
  if (values.json) writeFileSync(values.json, JSON.stringify(r, null, 2));
  return r.runs.every((x) => x.ok) ? 0 : 1;
}
