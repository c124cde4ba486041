/**
 * Runs the checks in order against one target. The order matters: the checks that need the
 * process alive come first, the reconnection before the exit (a client given a pid could not
 * follow a recreated process), the exit last.
 */
import { CHECKS, Ctx, type CheckResult } from './checks.js';
import { Target, type TargetOptions } from './target.js';

export interface RunOptions extends TargetOptions {
  /** Only these check ids (default: all). */
  only?: string[];
  skip?: string[];
  /** Runs of a check whose scenario did not happen as scripted before it counts as failed. */
  attempts?: number;
  onResult?: (r: CheckResult) => void;
}

export interface Report {
  kind: string;
  mode: string;
  transport: 'worker' | 'external';
  device: { id: number; name: string };
  pid: number;
  window: { start: number; end: number; name: string };
  bug: string | null;
  passed: boolean;
  checks: CheckResult[];
  ms: number;
}

export async function runConformance(o: RunOptions): Promise<Report> {
  const t0 = Date.now();
  const target = new Target(o);
  try {
    await target.open();
    target.runSince = await target.api.lastEventId();
    await target.reapply();
    const first = { id: target.dev.id, name: target.dev.name };
    const transport = target.transport;
    const ctx = new Ctx(target);
    const results: CheckResult[] = [];
    // Deadlocks the progress oracle reported (GET /v1/progress; machine access, absent on a
    // restricted token): a failed check names the first new one of the device as its cause.
    const deadlocks = async (): Promise<Array<{ id: number; kind: string; device: string; message: string }>> =>
      (await target.api.get<{ findings: Array<{ id: number; kind: string; device: string; message: string }> }>('/v1/progress').catch(() => ({ findings: [] }))).findings.filter((f) => f.kind === 'deadlock');
    const named = new Set((await deadlocks()).map((f) => f.id));
    for (const check of CHECKS) {
      if (o.only && !o.only.includes(check.id)) continue;
      if (o.skip?.includes(check.id)) continue;
      const c0 = Date.now();
      let attempts = 0;
      let v;
      for (;;) {
        attempts++;
        try {
          v = await check.run(ctx);
        } catch (e) {
          v = { result: 'fail' as const, evidence: `error: ${(e as Error).message}` };
        }
        if (!v.retry || attempts >= (o.attempts ?? 3)) break;
      }
      if (v.result === 'fail' && !/progress oracle/.test(v.evidence)) {
        const d = (await deadlocks()).find((f) => !named.has(f.id) && f.device === target.dev.name);
        if (d) v = { ...v, evidence: `${v.evidence}; progress oracle: ${d.message}` };
      }
      for (const f of await (v.result === 'fail' ? deadlocks() : Promise.resolve([]))) named.add(f.id);
      const r: CheckResult = { id: check.id, title: check.title, result: v.result, evidence: v.evidence, ms: Date.now() - c0, attempts };
      results.push(r);
      o.onResult?.(r);
    }
    await ctx.dropHelper();
    return {
      kind: o.kind,
      mode: o.mode,
      transport,
      device: first,
      pid: target.pid,
      window: target.window,
      bug: o.bug ?? null,
      passed: results.every((r) => r.result !== 'fail'),
      checks: results,
      ms: Date.now() - t0,
    };
  } finally {
    await target.close();
  }
}
