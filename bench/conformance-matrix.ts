/**
 * The conformance suite's bug x check matrix: every built-in kind, over both transports, under
 * every deliberate bug mode (and none), one full suite run per cell, in sequence (the checks are
 * timing-scripted: running cells in parallel on a small machine would measure the machine).
 *
 *   npm run build && node dist/bench/conformance-matrix.js [--kinds gpu,rdma] [--transports worker,external]
 *       [--bugs none,skip-seq-retry,...] [--runs N] [--out docs/data/conformance-matrix.json] [--md FILE] [--resume]
 *
 * Writes the JSON (every run: each check's result and evidence) after every run, so an
 * interrupted measurement keeps what it has, and the markdown table at the end (to stdout too).
 * A cell lists the checks that failed; the bug's own check is in bold, and `MISSED <check>` marks
 * a run in which the check meant for the bug passed.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { runConformance } from '../src/conformance/runner.js';
import type { DeviceKind } from '../src/devices/protocol.js';

const EVENTS = ['UNMAP', 'CLEAR', 'PROTECTION_VMA', 'PROTECTION_PAGE', 'SOFT_DIRTY', 'RELEASE', 'MIGRATE', 'EXCLUSIVE'];
const ALL_BUGS = ['none', 'ack-before-quiesce', 'skip-seq-retry', ...EVENTS.map((e) => `ignore-event:${e}`), 'lock-across-fault'];
const ALL_KINDS: DeviceKind[] = ['gpu', 'rdma', 'kvm', 'dmirror'];

/** The check each bug mode is meant to fail. */
export const EXPECTED: Record<string, string> = {
  'ack-before-quiesce': 'quiesce',
  'skip-seq-retry': 'read-retry',
  'ignore-event:UNMAP': 'event:UNMAP',
  'ignore-event:CLEAR': 'event:CLEAR',
  'ignore-event:PROTECTION_VMA': 'event:PROTECTION_VMA',
  'ignore-event:PROTECTION_PAGE': 'event:PROTECTION_PAGE',
  'ignore-event:SOFT_DIRTY': 'soft-dirty',
  'ignore-event:RELEASE': 'release',
  'ignore-event:MIGRATE': 'event:MIGRATE',
  'ignore-event:EXCLUSIVE': 'event:EXCLUSIVE',
  'lock-across-fault': 'progress',
};

interface Cell {
  kind: DeviceKind;
  transport: 'worker' | 'external';
  bug: string;
  run: number;
  ms: number;
  error?: string;
  failed: string[];
  skipped: string[];
  checks: Array<{ id: string; result: string; evidence: string; ms: number; attempts: number }>;
}

const { values } = parseArgs({
  options: {
    kinds: { type: 'string' },
    transports: { type: 'string' },
    bugs: { type: 'string' },
    runs: { type: 'string' },
    out: { type: 'string' },
    md: { type: 'string' },
    resume: { type: 'boolean' },
  },
});
const kinds = (values.kinds?.split(',') ?? ALL_KINDS) as DeviceKind[];
const transports = (values.transports?.split(',') ?? ['worker', 'external']) as Array<'worker' | 'external'>;
const bugs = values.bugs?.split(',') ?? ALL_BUGS;
const runs = Number(values.runs ?? 1);
const out = values.out ?? 'docs/data/conformance-matrix.json';

// --resume: keep the runs of the out file that did not error, and run only what is missing (a long
// measurement's process once failed to spawn clients with ENOMEM after 80 runs).
const cells: Cell[] = values.resume && existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as { cells: Cell[] }).cells.filter((c) => !c.error) : [];
const started = new Date().toISOString();
const t0 = Date.now();

function save(): void {
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ started, command: `node dist/bench/conformance-matrix.js ${process.argv.slice(2).join(' ')}`.trim(), node: process.version, runsPerCell: runs, ms: Date.now() - t0, cells }, null, 2) + '\n');
}

for (const bug of bugs) {
  for (const kind of kinds) {
    // lock-across-fault is a dmirror bug (its fault path); other kinds refuse the mode.
    if (bug === 'lock-across-fault' && kind !== 'dmirror') continue;
    for (const transport of transports) {
      for (let run = 1; run <= runs; run++) {
        if (cells.some((c) => c.kind === kind && c.transport === transport && c.bug === bug && c.run === run)) continue;
        const c0 = Date.now();
        let cell: Cell;
        try {
          const r = await runConformance({ mode: transport === 'worker' ? 'builtin-worker' : 'builtin-external', kind, bug: bug === 'none' ? undefined : bug });
          cell = {
            kind,
            transport,
            bug,
            run,
            ms: r.ms,
            failed: r.checks.filter((c) => c.result === 'fail').map((c) => c.id),
            skipped: r.checks.filter((c) => c.result === 'skip').map((c) => c.id),
            checks: r.checks.map((c) => ({ id: c.id, result: c.result, evidence: c.evidence, ms: c.ms, attempts: c.attempts })),
          };
        } catch (e) {
          cell = { kind, transport, bug, run, ms: Date.now() - c0, error: (e as Error).message, failed: [], skipped: [], checks: [] };
        }
        cells.push(cell);
        save();
        process.stderr.write(`${bug.padEnd(28)} ${kind.padEnd(8)} ${transport.padEnd(9)} #${run} ${(cell.ms / 1000).toFixed(1).padStart(5)} s  ${cell.error ? `ERROR ${cell.error}` : cell.failed.join(', ') || 'pass'}\n`);
      }
    }
  }
}

/** One markdown cell: the failed checks of each run (runs separated by ` / `). */
function cellText(bug: string, list: Cell[]): string {
  if (list.length === 0) return 'n/a';
  const want = EXPECTED[bug];
  return list
    .map((c) => {
      if (c.error) return `error: ${c.error.slice(0, 60)}`;
      const parts = c.failed.map((id) => (id === want ? `**${id}**` : id));
      if (want && !c.failed.includes(want)) parts.push(`MISSED ${want}`);
      return parts.join(', ') || (bug === 'none' ? 'pass' : '-');
    })
    .join(' / ');
}

const cols = kinds.flatMap((k) => transports.map((t) => ({ k, t })));
const lines = [
  `| bug | ${cols.map((c) => `${c.k} ${c.t}`).join(' | ')} |`,
  `|---|${cols.map(() => '---').join('|')}|`,
  ...bugs.map((bug) => `| ${bug} | ${cols.map((c) => cellText(bug, cells.filter((x) => x.bug === bug && x.kind === c.k && x.transport === c.t))).join(' | ')} |`),
];
const md = lines.join('\n') + '\n';
if (values.md) writeFileSync(values.md, md);
process.stdout.write(md);
save();
process.stderr.write(`${cells.length} runs in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
