/**
 * The record of a soak run: JSON lines, written as the run goes (a run stopped half way keeps what
 * it did). The first line is the header (format version, seed, options); then every operation and
 * injected fault in order (`op`, with its index), the invalidations the kernel ran (`inv`, capped),
 * checkpoints (`check`), problems (`problem`, naming the operation index they were detected at) and
 * a final `summary`. `devmirror replay FILE` reads it back (readRecord) and runs the same
 * operations and faults again.
 */
import { createWriteStream, mkdirSync, readFileSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { DevmirrorError } from '../errors.js';

export const RECORD_VERSION = 1;

export interface RecordHeader {
  t: 'header';
  version: number;
  seed: number;
  /** The options the run used (SoakOptions without callbacks). */
  options: Record<string, unknown>;
  startedAt: string;
  node: string;
}

export interface RecordedOp {
  t: 'op';
  /** Operation index (0-based). */
  i: number;
  /** Milliseconds since the start of the run. */
  ms: number;
  op: Record<string, unknown> & { k: string };
}

export interface RecordedCheck {
  t: 'check';
  i: number;
  ms: number;
  ok: boolean;
  rssMb?: number;
}

export interface RecordedProblem {
  t: 'problem';
  i: number;
  ms: number;
  category: string;
  detail: string;
}

export type RecordLine = RecordHeader | RecordedOp | RecordedCheck | RecordedProblem | { t: 'inv' | 'summary' | 'note'; [k: string]: unknown };

export class Recorder {
  private readonly out: WriteStream | null;
  private invalidations = 0;
  constructor(
    readonly path: string | null,
    /** Invalidation lines kept at most (the rest are counted, not written). */
    private readonly maxInvalidations = 200_000,
  ) {
    if (path) mkdirSync(dirname(path), { recursive: true });
    this.out = path ? createWriteStream(path, { flags: 'w' }) : null;
  }

  write(line: RecordLine): void {
    if (line.t === 'inv' && ++this.invalidations > this.maxInvalidations) return;
    if (this.out?.writableEnded) return;
    this.out?.write(JSON.stringify(line) + '\n');
  }

  get droppedInvalidations(): number {
    return Math.max(0, this.invalidations - this.maxInvalidations);
  }

  close(): Promise<void> {
    const out = this.out;
    if (!out || out.writableEnded) return Promise.resolve();
    return new Promise((resolve) => out.end(() => resolve()));
  }
}

export interface SoakRecord {
  header: RecordHeader;
  ops: RecordedOp[];
  checks: RecordedCheck[];
  problems: RecordedProblem[];
  summary: Record<string, unknown> | null;
}

/** Reads a record; DM_ERR_VALIDATION if it is not one (with the line that is wrong). */
export function readRecord(path: string): SoakRecord {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new DevmirrorError('DM_ERR_VALIDATION', `cannot read the record ${path}: ${(e as Error).message}`);
  }
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const rec: SoakRecord = { header: null as unknown as RecordHeader, ops: [], checks: [], problems: [], summary: null };
  lines.forEach((l, n) => {
    let v: RecordLine;
    try {
      v = JSON.parse(l) as RecordLine;
    } catch {
      throw new DevmirrorError('DM_ERR_VALIDATION', `${path}:${n + 1}: not JSON`);
    }
    if (!v || typeof v !== 'object' || typeof v.t !== 'string') throw new DevmirrorError('DM_ERR_VALIDATION', `${path}:${n + 1}: not a record line`);
    if (n === 0) {
      if (v.t !== 'header') throw new DevmirrorError('DM_ERR_VALIDATION', `${path}: the first line is not a soak record header`);
      if (v.version !== RECORD_VERSION) throw new DevmirrorError('DM_ERR_VALIDATION', `${path}: record format ${String(v.version)}, this devmirror reads ${RECORD_VERSION}`);
      rec.header = v;
      return;
    }
    if (v.t === 'op') {
      const op = v as RecordedOp;
      if (!Number.isInteger(op.i) || !op.op || typeof op.op.k !== 'string') throw new DevmirrorError('DM_ERR_VALIDATION', `${path}:${n + 1}: bad operation line`);
      rec.ops.push(op);
    } else if (v.t === 'check') rec.checks.push(v as RecordedCheck);
    else if (v.t === 'problem') rec.problems.push(v as RecordedProblem);
    else if (v.t === 'summary') rec.summary = v;
  });
  if (!rec.header) throw new DevmirrorError('DM_ERR_VALIDATION', `${path}: empty record`);
  return rec;
}
