/**
 * Checks of an exported trace shared by the trace tests: the JSON schema (docs/trace.schema.json,
 * with ajv, which fastify already brings), and what the schema cannot say: spans of one thread nest
 * strictly, every thread and process is named, flows pair up.
 */
import { readFileSync } from 'node:fs';
import AjvModule from 'ajv';
import type { ChromeEvent, ChromeTrace } from '../../src/trace/chrome-export.js';

const Ajv = (AjvModule as unknown as { default?: typeof AjvModule }).default ?? AjvModule;
const schema = JSON.parse(readFileSync(new URL('../../docs/trace.schema.json', import.meta.url), 'utf8')) as object;
const validate = new (Ajv as unknown as new (o: object) => { compile(s: object): ((d: unknown) => boolean) & { errors?: unknown } })({ allErrors: true, strict: false }).compile(schema);

export function schemaErrors(t: unknown): unknown[] {
  return validate(t) ? [] : ((validate.errors as unknown[]) ?? ['invalid']);
}

/** Problems with nesting, naming and flows; [] when none. */
export function structureErrors(t: ChromeTrace): string[] {
  const out: string[] = [];
  const threads = new Map<string, string>();
  const procs = new Set<number>();
  for (const e of t.traceEvents) {
    if (e.ph === 'M' && e.name === 'thread_name') threads.set(`${e.pid}/${e.tid}`, String(e.args?.name));
    if (e.ph === 'M' && e.name === 'process_name') procs.add(e.pid);
  }
  const spans = new Map<string, ChromeEvent[]>();
  const flows = new Map<number, { s: number; f: number }>();
  for (const e of t.traceEvents) {
    if (e.ph === 'M') continue;
    if (!procs.has(e.pid)) out.push(`unnamed process ${e.pid}`);
    if (e.ph !== 'C' && !threads.has(`${e.pid}/${e.tid}`)) out.push(`unnamed thread ${e.pid}/${e.tid} (${e.name})`);
    if (e.ph === 'X') {
      const k = `${e.pid}/${e.tid}`;
      (spans.get(k) ?? spans.set(k, []).get(k)!).push(e);
    }
    if (e.ph === 's' || e.ph === 'f') {
      const f = flows.get(e.id!) ?? { s: 0, f: 0 };
      f[e.ph]++;
      flows.set(e.id!, f);
    }
  }
  const nsOf = (x: number): number => Math.round(x * 1000);
  for (const [k, list] of spans) {
    list.sort((a, b) => a.ts! - b.ts! || b.dur! - a.dur!);
    const open: number[] = [];
    for (const e of list) {
      const t0 = nsOf(e.ts!);
      const t1 = nsOf(e.ts! + e.dur!);
      while (open.length && open[open.length - 1] <= t0) open.pop();
      if (open.length && t1 > open[open.length - 1]) out.push(`${threads.get(k)}: "${e.name}" at ${e.ts} overlaps its parent without nesting`);
      open.push(t1);
    }
  }
  for (const [id, f] of flows) if (f.s !== 1 || f.f !== 1) out.push(`flow ${id}: ${f.s} starts, ${f.f} ends`);
  return out;
}

export function threadNames(t: ChromeTrace): Map<string, { pid: number; tid: number }> {
  const m = new Map<string, { pid: number; tid: number }>();
  for (const e of t.traceEvents) if (e.ph === 'M' && e.name === 'thread_name') m.set(String(e.args?.name), { pid: e.pid, tid: e.tid });
  return m;
}
