/** The pass/fail table (one line of evidence per check) and the JSON document. */
import type { CheckResult } from './checks.js';
import type { Report } from './runner.js';

export function formatTable(r: Report): string {
  const head = `devmirror conformance: ${r.kind} (${r.transport}, ${r.mode} mode), device #${r.device.id} ${r.device.name}, pid ${r.pid}, window ${r.window.name} 0x${r.window.start.toString(16)}-0x${r.window.end.toString(16)}${r.bug ? `, bug ${r.bug}` : ''}`;
  const idW = Math.max(5, ...r.checks.map((c) => c.id.length));
  const lines = [head, '', `${'check'.padEnd(idW)}  result  evidence`, `${'-'.repeat(idW)}  ------  --------`];
  for (const c of r.checks) lines.push(formatRow(c, idW));
  const failed = r.checks.filter((c) => c.result === 'fail').length;
  const skipped = r.checks.filter((c) => c.result === 'skip').length;
  lines.push('', `${r.passed ? 'PASS' : 'FAIL'}: ${r.checks.length - failed - skipped} passed, ${failed} failed, ${skipped} skipped in ${(r.ms / 1000).toFixed(1)} s`);
  return lines.join('\n');
}

export function formatRow(c: CheckResult, idW = 20): string {
  return `${c.id.padEnd(idW)}  ${c.result.toUpperCase().padEnd(6)}  ${c.evidence}`;
}

/** The --json document: stable field names, one object per check. */
export function toJson(r: Report): Record<string, unknown> {
  return {
    passed: r.passed,
    kind: r.kind,
    mode: r.mode,
    transport: r.transport,
    device: r.device,
    pid: r.pid,
    window: r.window,
    bug: r.bug,
    ms: r.ms,
    checks: r.checks.map((c) => ({ id: c.id, title: c.title, result: c.result, evidence: c.evidence, ms: c.ms, attempts: c.attempts })),
  };
}
