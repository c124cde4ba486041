/**
 * The suite catches every deliberate bug mode in the check meant for it (docs/conformance.md has
 * the whole measured matrix; here each bug runs only the checks it must fail, to keep the time
 * down). Worker transport; the gpu unless the bug is about something only another kind models.
 */
import { describe, expect, it } from 'vitest';
import { runConformance } from '../../src/conformance/runner.js';
import type { DeviceKind } from '../../src/devices/protocol.js';

const CASES: Array<{ bug: string; kind: DeviceKind; check: string }> = [
  { bug: 'ack-before-quiesce', kind: 'gpu', check: 'quiesce' },
  { bug: 'skip-seq-retry', kind: 'gpu', check: 'read-retry' },
  { bug: 'skip-seq-retry', kind: 'rdma', check: 'read-retry' },
  { bug: 'ignore-event:CLEAR', kind: 'gpu', check: 'window' },
  { bug: 'ignore-event:CLEAR', kind: 'dmirror', check: 'event:CLEAR' },
  { bug: 'ignore-event:UNMAP', kind: 'gpu', check: 'event:UNMAP' },
  { bug: 'ignore-event:PROTECTION_VMA', kind: 'gpu', check: 'event:PROTECTION_VMA' },
  { bug: 'ignore-event:PROTECTION_PAGE', kind: 'gpu', check: 'event:PROTECTION_PAGE' },
  { bug: 'ignore-event:SOFT_DIRTY', kind: 'gpu', check: 'soft-dirty' },
  { bug: 'ignore-event:MIGRATE', kind: 'gpu', check: 'event:MIGRATE' },
  { bug: 'ignore-event:EXCLUSIVE', kind: 'gpu', check: 'event:EXCLUSIVE' },
  // Device writes run all through the exit: a RELEASE answered without dropping the mirror is
  // written through before the exit's UNMAP (kvm has no RELEASE event: its whole-mm release op).
  { bug: 'ignore-event:RELEASE', kind: 'gpu', check: 'release' },
  { bug: 'ignore-event:RELEASE', kind: 'rdma', check: 'release' },
  { bug: 'ignore-event:RELEASE', kind: 'dmirror', check: 'release' },
  { bug: 'lock-across-fault', kind: 'dmirror', check: 'progress' },
];

describe('each bug mode fails its check', () => {
  for (const { bug, kind, check } of CASES) {
    it(`${bug} (${kind}) fails ${check}`, async () => {
      const r = await runConformance({ mode: 'builtin-worker', kind, bug, only: [check] });
      if (r.checks.find((x) => x.id === check)?.result !== 'fail') console.log(JSON.stringify(r.checks));
      expect(r.passed).toBe(false);
      const c = r.checks.find((x) => x.id === check)!;
      expect(c.result).toBe('fail');
      expect(c.evidence).toMatch(check === 'progress' ? /progress oracle: deadlock/ : check === 'release' ? /finding \S+ .*\(RELEASE\)/ : /finding|pagemap|maps/);
    }, 120_000);
  }
});
