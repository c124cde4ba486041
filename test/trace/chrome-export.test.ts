import { describe, expect, it } from 'vitest';
import { packLanes, toChromeTrace, type ChromeEvent } from '../../src/trace/chrome-export.js';
import { TraceRecorder } from '../../src/trace/recorder.js';
import { MmuNotifierEvent, RANGE_BLOCKABLE, type NotifierRange } from '../../src/notifier/range.js';
import type { InvalidationRecord } from '../../src/notifier/subscriptions.js';
import { ULONG_MAX } from '../../src/kernel/layout.js';
import { schemaErrors, structureErrors, threadNames } from './check-trace.js';

const names = {
  process: (pid: number) => (pid === 100 ? 'app' : undefined),
  device: (id: number) => (id === 1 ? { name: 'gpu0', transport: 'worker' } : id === 2 ? { name: 'nic0', transport: 'external' } : undefined),
};

function inv(id: number, t0: number, acks: Array<[number | undefined, number]>, dur: number, over: Partial<NotifierRange> = {}): InvalidationRecord {
  const range: NotifierRange = { pid: 100, start: 0x1000, end: 0x3000, event: MmuNotifierEvent.UNMAP, flags: RANGE_BLOCKABLE, owner: null, origin: 'munmap', id, ...over };
  return {
    range,
    result: 'ok',
    subscribers: acks.map(([dev, ack], i) => ({ info: { label: dev === undefined ? `sub${i}` : `dev${dev}:range`, deviceId: dev, deviceKind: 'gpu' }, kind: 'interval', result: 'ok', ackUs: ack })),
    startedUs: t0,
    ackedUs: t0 + Math.max(0, ...acks.map((a) => a[1])),
    endedUs: t0 + dur,
  };
}

const of = (events: ChromeEvent[], ph: string, name?: string): ChromeEvent[] => events.filter((e) => e.ph === ph && (name === undefined || e.name === name));

describe('the Chrome trace exporter', () => {
  it('puts an invalidation on the notifier track and on each subscriber device track (start to ack, then an end instant), linked by flows', () => {
    const r = new TraceRecorder(100);
    r.invalidation(inv(7, 1000, [[1, 5], [2, 12.5]], 20));
    const t = toChromeTrace(r.query().entries, names, {});
    expect(structureErrors(t)).toEqual([]);
    const tracks = threadNames(t);
    expect([...tracks.keys()]).toEqual(['notifier (invalidations)', 'gpu0 (worker)', 'nic0 (external)']);
    expect(tracks.get('notifier (invalidations)')!.pid).toBe(1);
    expect(tracks.get('gpu0 (worker)')!.pid).toBe(2);
    const k = of(t.traceEvents, 'X', 'UNMAP munmap')[0];
    expect(k).toMatchObject({ ts: 1000, dur: 20, tid: tracks.get('notifier (invalidations)')!.tid });
    expect(k.args).toMatchObject({ id: 7, pid: 100, start: '0x1000', end: '0x3000', event: 'UNMAP', origin: 'munmap', blockable: true, owner: null, result: 'ok' });
    const dev = of(t.traceEvents, 'X', 'UNMAP').sort((a, b) => a.tid - b.tid);
    expect(dev.map((e) => [e.tid, e.ts, e.dur])).toEqual([
      [tracks.get('gpu0 (worker)')!.tid, 1000, 5],
      [tracks.get('nic0 (external)')!.tid, 1000, 12.5],
    ]);
    expect(of(t.traceEvents, 'X', 'wait for acks')[0]).toMatchObject({ ts: 1000, dur: 12.5 });
    expect(of(t.traceEvents, 'i', 'end UNMAP').length).toBe(2);
    // Longer spans first at one timestamp: the kernel's, then nic0's, then gpu0's.
    const flows = t.traceEvents.filter((e) => e.ph === 's' || e.ph === 'f');
    expect(flows.map((e) => [e.ph, e.id, e.tid])).toEqual([
      ['s', 1, k.tid],
      ['s', 2, k.tid],
      ['f', 2, dev[1].tid],
      ['f', 1, dev[0].tid],
    ]);
    expect(schemaErrors({ ...t, metadata: { exporter: 'devmirror', bootId: 1, entries: 1, nextSince: 1, dropped: 0, recorded: 1, capacity: 100 } })).toEqual([]);
  });

  it('writes the whole-address-space end as 0xffffffffffffffff and a subscriber that is no device on its own track', () => {
    const r = new TraceRecorder(10);
    r.invalidation(inv(1, 10, [[undefined, 1]], 11, { start: 0, end: ULONG_MAX, event: MmuNotifierEvent.RELEASE, origin: 'exit' }));
    const t = toChromeTrace(r.query().entries, names);
    expect(of(t.traceEvents, 'X', 'RELEASE exit')[0].args?.end).toBe('0xffffffffffffffff');
    expect(threadNames(t).has('subscriber sub0')).toBe(true);
  });

  it('packs overlapping spans of one track into lanes that nest, and sorts events by time after the metadata', () => {
    const r = new TraceRecorder(100);
    // Two invalidations of the same device that overlap without nesting, and a range fault across.
    r.invalidation(inv(1, 100, [[1, 50]], 60));
    r.invalidation(inv(2, 120, [[1, 10]], 200));
    // kernel: [100,160] and [120,320] cross; gpu0: [90,130] (fault) crosses [100,150], holds [120,130]
    r.span('d:1', 'hmm_range_fault', 90, 100, { result: -16 }, 130);
    r.span('p:100', 'munmap', 95, 100, {}, 300);
    r.span('a:reclaim', 'shrink', 10, null, {}, 20);
    r.span('a:khugepaged', 'khugepaged scan', 30, null, {}, 40);
    const t = toChromeTrace(r.query().entries, names);
    expect(structureErrors(t)).toEqual([]);
    const tracks = [...threadNames(t).keys()];
    expect(tracks).toEqual(['notifier (invalidations)', 'notifier (invalidations) #2', 'reclaim', 'khugepaged', 'gpu0 (worker)', 'gpu0 (worker) #2', 'pid 100 app']);
    const firstNonMeta = t.traceEvents.findIndex((e) => e.ph !== 'M');
    expect(t.traceEvents.slice(firstNonMeta).every((e) => e.ph !== 'M')).toBe(true);
    const ts = t.traceEvents.slice(firstNonMeta).map((e) => e.ts!);
    expect(ts).toEqual([...ts].sort((a, b) => a - b));
    const ebusy = of(t.traceEvents, 'X', 'hmm_range_fault')[0];
    expect(ebusy.args).toEqual({ result: -16 });
  });

  it('lanes: nested and adjacent spans share a lane, crossing ones do not', () => {
    const s = (t0: number, t1: number) => ({ track: 'x', name: '', cat: '', t0, t1, lane: -1 });
    const list = [s(0, 100), s(0, 10), s(10, 20), s(50, 150), s(100, 120), s(150, 150)];
    expect(packLanes(list)).toBe(2);
    expect(list.map((x) => x.lane)).toEqual([0, 0, 0, 1, 0, 0]);
  });

  it('the ring keeps the newest entries, counts the dropped ones, and pages with since', () => {
    const r = new TraceRecorder(3);
    for (let i = 0; i < 5; i++) r.instant('d:1', `e${i}`, 100, undefined, i);
    expect(r.dropped).toBe(2);
    expect(r.query().entries.map((e) => e.seq)).toEqual([3, 4, 5]);
    expect(r.query({ limit: 2 }).entries.map((e) => e.seq)).toEqual([4, 5]);
    const p = r.query({ since: 1, limit: 2 });
    expect([p.entries.map((e) => e.seq), p.dropped, p.nextSince]).toEqual([[3, 4], 1, 4]);
    expect(r.query({ since: 5 }).entries).toEqual([]);
    expect(r.query({ filter: (e) => e.seq !== 4 }).entries.map((e) => e.seq)).toEqual([3, 5]);
  });

  it('counters become C events named after their device', () => {
    const r = new TraceRecorder(10);
    r.counter('d:1', 'dma', 100, { bytes: 640, accessesChecked: 10 }, 5);
    const t = toChromeTrace(r.query().entries, names);
    expect(of(t.traceEvents, 'C')[0]).toMatchObject({ name: 'gpu0 (worker) dma', pid: 2, ts: 5, args: { bytes: 640, accessesChecked: 10 } });
  });
});
