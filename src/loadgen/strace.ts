/**
 * Parses the output of `strace -f -tt -e trace=memory,openat,close PROGRAM` into an address-space
 * history: mmap, munmap, mremap, mprotect, madvise, brk, and the files opened (so that file
 * mappings map a file). Lines look like
 *
 *   4242  10:15:01.123456 mmap(NULL, 8392704, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f1234000000
 *   10:15:01.123456 munmap(0x7f1234000000, 8392704) = 0          (no pid column without -f)
 *   4243  10:15:01.2 mmap(NULL, 4096, PROT_READ, MAP_SHARED, 3, 0 <unfinished ...>
 *   4243  10:15:01.3 <... mmap resumed>) = 0x7f...
 *
 * Failed calls (`= -1 ENOMEM ...`), signals (`--- SIG...`) and other syscalls are skipped. A
 * task's end (`+++ exited with 0 +++`, `+++ killed by SIGKILL +++`, `+++ superseded by execve ...`)
 * is kept apart from the calls, with its place among them. strace cannot tell threads from
 * processes with this filter (neither clone nor execve is traced): every task is kept with its pid,
 * and src/loadgen/address-spaces.ts infers which of them share an address space.
 */

export type Op =
  | { kind: 'mmap'; addr: number; length: number; prot: number; flags: string[]; fd: number; offset: number; result: number }
  | { kind: 'munmap'; addr: number; length: number }
  | { kind: 'mremap'; addr: number; oldLength: number; newLength: number; flags: string[]; result: number }
  | { kind: 'mprotect'; addr: number; length: number; prot: number }
  | { kind: 'madvise'; addr: number; length: number; advice: string }
  | { kind: 'brk'; addr: number; result: number }
  | { kind: 'open'; path: string; fd: number }
  | { kind: 'close'; fd: number };

export interface TraceEvent {
  pid: number;
  /** Seconds since midnight, from -tt. */
  t: number;
  op: Op;
}

/** A task's end: it made its last call (exit, a fatal signal, or another thread's execve). */
export interface TaskExit {
  pid: number;
  t: number;
  /** How many events precede it: the task is gone before events[before]. */
  before: number;
}

export interface ParsedTrace {
  events: TraceEvent[];
  exits: TaskExit[];
  /** Lines that looked like a traced call but could not be parsed (kept for diagnostics). */
  skipped: number;
  pids: number[];
}

const PROT_BITS: Record<string, number> = { PROT_NONE: 0, PROT_READ: 1, PROT_WRITE: 2, PROT_EXEC: 4 };

function num(s: string): number {
  const t = s.trim();
  if (t === 'NULL') return 0;
  if (/^0x[0-9a-f]+$/i.test(t)) return Number.parseInt(t, 16);
  if (/^-?\d+$/.test(t)) return Number(t);
  return Number.NaN;
}

function prot(s: string): number {
  return s
    .split('|')
    .map((x) => x.trim())
    .reduce((p, x) => p | (PROT_BITS[x] ?? 0), 0);
}

/** Splits the top-level arguments of a call ("a, b|c, "s,t", 0"). */
function args(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q = false;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch === '"' && s[i - 1] !== '\\') q = !q;
    if (ch === ',' && !q) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim() !== '') out.push(cur.trim());
  return out;
}

/** Arguments each parsed call needs (mremap's flags and open's mode are optional). */
const ARG_COUNT: Record<string, number> = { mmap: 6, munmap: 2, mremap: 3, mprotect: 3, madvise: 3, brk: 1, openat: 2, open: 1, close: 1 };

const LINE = /^(?:(\d+)\s+)?(\d\d):(\d\d):(\d\d(?:\.\d+)?)\s+(.*)$/;

export function parseStrace(text: string): ParsedTrace {
  const events: TraceEvent[] = [];
  const exits: TaskExit[] = [];
  const pending = new Map<number, string>();
  const pids = new Set<number>();
  let skipped = 0;
  for (const raw of text.split('\n')) {
    const m = LINE.exec(raw.trim());
    if (!m) continue;
    const pid = m[1] ? Number(m[1]) : 0;
    const t = Number(m[2]) * 3600 + Number(m[3]) * 60 + Number(m[4]);
    let body = m[5];
    if (body.startsWith('---')) continue;
    if (body.startsWith('+++')) {
      if (Number.isSafeInteger(pid)) exits.push({ pid, t, before: events.length });
      continue;
    }
    // Calls split by another task's output.
    if (body.endsWith('<unfinished ...>')) {
      pending.set(pid, body.slice(0, -'<unfinished ...>'.length).trim());
      continue;
    }
    const resumed = /^<\.\.\. (\w+) resumed>\s*(.*)$/.exec(body);
    if (resumed) {
      const head = pending.get(pid);
      pending.delete(pid);
      if (!head) {
        skipped++;
        continue;
      }
      body = head + resumed[2];
    }
    const call = /^(\w+)\((.*)\)\s*=\s*(-?\w+)(.*)$/.exec(body);
    if (!call) continue;
    const [, name, argStr, resStr] = call;
    const res = num(resStr);
    if (!Number.isFinite(res) || res < 0) continue; // a failed call changed nothing
    const a = args(argStr);
    // A call with fewer arguments than it takes (a cut or mangled line) could not be parsed: it is
    // skipped like any other, not a TypeError from a missing argument.
    if (Object.hasOwn(ARG_COUNT, name) && a.length < ARG_COUNT[name]) {
      skipped++;
      continue;
    }
    let op: Op | null = null;
    switch (name) {
      case 'mmap':
        op = { kind: 'mmap', addr: num(a[0]), length: num(a[1]), prot: prot(a[2]), flags: a[3].split('|'), fd: num(a[4]), offset: num(a[5]), result: res };
        break;
      case 'munmap':
        op = { kind: 'munmap', addr: num(a[0]), length: num(a[1]) };
        break;
      case 'mremap':
        op = { kind: 'mremap', addr: num(a[0]), oldLength: num(a[1]), newLength: num(a[2]), flags: (a[3] ?? '0').split('|'), result: res };
        break;
      case 'mprotect':
        op = { kind: 'mprotect', addr: num(a[0]), length: num(a[1]), prot: prot(a[2]) };
        break;
      case 'madvise':
        op = { kind: 'madvise', addr: num(a[0]), length: num(a[1]), advice: a[2] };
        break;
      case 'brk':
        op = { kind: 'brk', addr: num(a[0]), result: res };
        break;
      case 'openat': {
        const path = /"((?:[^"\\]|\\.)*)"/.exec(a[1] ?? '');
        if (path) op = { kind: 'open', path: path[1], fd: res };
        break;
      }
      case 'open': {
        const path = /"((?:[^"\\]|\\.)*)"/.exec(a[0] ?? '');
        if (path) op = { kind: 'open', path: path[1], fd: res };
        break;
      }
      case 'close':
        op = { kind: 'close', fd: num(a[0]) };
        break;
      default:
        continue;
    }
    // A pid column too long to be one (strace pids fit in 32 bits) is as unparsable as a bad number.
    if (!op || !Number.isSafeInteger(pid) || Object.values(op).some((v) => typeof v === 'number' && !Number.isFinite(v))) {
      skipped++;
      continue;
    }
    pids.add(pid);
    events.push({ pid, t, op });
  }
  return { events, exits, skipped, pids: [...pids] };
}
