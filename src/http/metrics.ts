/**
 * Prometheus metrics (prom-client) at GET /metrics. Invalidation latency histograms are labelled
 * only by event and device kind (bounded cardinality: 8 events x a handful of kinds); per-device
 * figures are summed per kind. Gauges are computed at scrape time from the live objects, so a
 * scrape never disagrees with /v1/devices.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { Service } from '../service.js';
import { EVENT_NAMES, ORIGINS } from '../notifier/range.js';
import { DEVICE_KINDS } from '../devices/protocol.js';
import { access } from './auth.js';
import { HotCounter, HotHistogram } from './hot-metrics.js';

/**
 * The device_kind label: the built-in personalities, the kernel's own subscribers, and `other` for
 * whatever an external client calls itself (its Hello's device_kind is free text: a client that
 * connected again and again under new kinds would otherwise add series without bound).
 */
const KINDS = new Set<string>([...DEVICE_KINDS, 'kernel', 'external']);
export const kindLabel = (kind: string | null | undefined): string => (kind ? (KINDS.has(kind) ? kind : 'other') : 'kernel');

/** Event numbers in series keys: the named events by number, any other in the last slot (labelled UNKNOWN). */
const EVENT_SLOTS = 16;
const eventLabels = (event: string): Record<string, string> => ({ event });
const eventResultLabels = (event: string, result: string): Record<string, string> => ({ event, result });
const originEventLabels = (origin: string, event: string): Record<string, string> => ({ origin, event });
const eventKindLabels = (event: string, kind: string): Record<string, string> => ({ event, device_kind: kind });

/** Microsecond latencies as seconds, from 5 us to 10 s. */
const BUCKETS = [5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1, 10];

export function installMetrics(app: FastifyInstance, svc: Service): Registry {
  const reg = new Registry();
  collectDefaultMetrics({ register: reg, prefix: 'devmirror_process_' });
  const k = svc.kernel;

  // Updated on every invalidation, on the kernel thread: see hot-metrics.ts.
  const invalidation = new HotHistogram('devmirror_invalidation_seconds', 'Invalidation round (start published to end delivered), by event', BUCKETS);
  const ack = new HotHistogram('devmirror_invalidation_ack_seconds', "Start published to a subscriber's acknowledgement, by event and device kind", BUCKETS);
  const invalidations = new HotCounter('devmirror_invalidations_total', 'Invalidations, by event and result');
  // origin is one of ORIGINS (a fixed list of 24) and event one of 8: bounded like the others.
  const byOrigin = new HotCounter('devmirror_invalidations_by_origin_total', 'Invalidations, by origin (the syscall or kernel activity that sent them) and event');
  for (const m of [invalidation, ack, invalidations, byOrigin]) reg.registerMetric(m as never);
  // Series keys are numbers: (a label's index) * EVENT_SLOTS + the event number. The origin and
  // kind indexes are found by the origin (a string constant) and the subscriber's kind in maps that
  // stay as small as the label sets.
  const originIndex = new Map<string, number>();
  const kindIndex = new Map<string, number>();
  const unobserve = k.observe({
    // In batches (at most 10 ms late, and before every scrape, below), not inside every round.
    deferred: true,
    onInvalidation: (rec) => {
      const e = rec.range.event;
      const named = EVENT_NAMES[e] !== undefined;
      const slot = named ? e : EVENT_SLOTS - 1;
      const ev = named ? EVENT_NAMES[e] : 'UNKNOWN';
      let o = originIndex.get(rec.range.origin);
      if (o === undefined) {
        o = ORIGINS.indexOf(rec.range.origin);
        // Any string may arrive as an origin: only the known ones are remembered (bounded).
        if (o >= 0) originIndex.set(rec.range.origin, o);
      }
      invalidations.inc(slot * 2 + (rec.result === 'ok' ? 0 : 1), eventResultLabels, ev, rec.result);
      byOrigin.inc((o + 1) * EVENT_SLOTS + slot, originEventLabels, o < 0 ? 'other' : ORIGINS[o], ev);
      invalidation.observe(slot, Math.max(0, rec.endedUs - rec.startedUs) / 1e6, eventLabels, ev);
      const subs = rec.subscribers;
      for (let i = 0; i < subs.length; i++) {
        const s = subs[i];
        // By the label, not the kind: a client's kind is free text, the labels are a bounded set.
        const kind = kindLabel(s.info.deviceKind);
        let kx = kindIndex.get(kind);
        if (kx === undefined) kindIndex.set(kind, (kx = kindIndex.size));
        ack.observe(kx * EVENT_SLOTS + slot, Math.max(0, s.ackUs) / 1e6, eventKindLabels, ev, kind);
      }
    },
  });
  app.addHook('onClose', async () => unobserve());

  const kernelCounter = (name: string, help: string, read: () => number): void => {
    new Counter({
      name,
      help,
      registers: [reg],
      collect() {
        // Counters mirror the kernel's monotonic statistics.
        (this as Counter).reset();
        (this as Counter).inc(read());
      },
    });
  };
  kernelCounter('devmirror_page_faults_total', 'CPU page faults handled by the emulated kernel', () => k.stats.faults);
  kernelCounter('devmirror_cow_faults_total', 'Copy-on-write faults', () => k.stats.cowFaults);
  kernelCounter('devmirror_swap_outs_total', 'Pages swapped out', () => k.stats.swapOuts);

  const devices = () => [
    ...svc.devices.list().map((d) => ({ kind: d.kind, state: d.state as string, transport: 'worker', counters: d.counters, checked: d.sanitizer?.checked ?? 0, findings: d.sanitizer?.findings ?? 0, refaults: d.sanitizer?.refaults ?? 0, refaultFaults: d.sanitizer?.refaultFaults ?? 0, evictions: d.handshake.evictions })),
    ...svc.channel.list().map((d) => ({ kind: d.kind, state: d.state as string, transport: 'external', counters: d.counters, checked: d.sanitizer.stats.checked, findings: d.sanitizer.stats.findings, refaults: d.sanitizer.stats.refaults, refaultFaults: d.sanitizer.stats.refaultFaults, evictions: d.handshake.evictions })),
  ];
  const perKind = (name: string, help: string, value: (d: ReturnType<typeof devices>[number]) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['device_kind'],
      registers: [reg],
      collect() {
        const g = this as Gauge;
        g.reset();
        const sums = new Map<string, number>();
        for (const d of devices()) sums.set(kindLabel(d.kind), (sums.get(kindLabel(d.kind)) ?? 0) + value(d));
        for (const [kind, v] of sums) g.set({ device_kind: kind }, v);
      },
    });
  };
  perKind('devmirror_devices', 'Devices alive, by kind', (d) => (d.state === 'running' ? 1 : 0));
  perKind('devmirror_device_faults', 'Device page faults (faults, page_faults, pf_taken), summed by kind', (d) => (d.counters.faults ?? 0) + (d.counters.page_faults ?? 0) + (d.counters.pf_taken ?? 0));
  perKind('devmirror_device_invalidations', 'Invalidations the devices handled, by kind', (d) => d.counters.invalidations ?? 0);
  perKind('devmirror_device_refaults', 'Device refaults: pages handed again to a device after an invalidation took them, by kind', (d) => d.refaults);
  perKind('devmirror_device_refault_faults', 'Device faults that refaulted: kernel replies that handed a device back at least one page an invalidation took, by kind', (d) => d.refaultFaults);
  perKind('devmirror_sanitizer_checked', 'Device accesses the sanitizer checked, by kind', (d) => d.checked);
  perKind('devmirror_sanitizer_findings', 'Sanitizer findings (stale, lost-write, write-ro, unmapped, wrong-pfn), by kind', (d) => d.findings);
  perKind('devmirror_device_evictions', 'Devices evicted for missing the acknowledgement deadline, by kind', (d) => d.evictions);
  new Gauge({
    name: 'devmirror_channel_clients',
    help: 'Connected notifier-channel clients (external devices and bound workers)',
    registers: [reg],
    collect() {
      (this as Gauge).set(svc.channel.sessions.size);
    },
  });
  new Gauge({
    name: 'devmirror_frames_in_use',
    help: 'RAM frames in use',
    registers: [reg],
    collect() {
      (this as Gauge).set(k.mem.ramFrames - k.mem.freeFrames());
    },
  });
  new Gauge({
    name: 'devmirror_frames_total',
    help: 'RAM frames',
    registers: [reg],
    collect() {
      (this as Gauge).set(k.mem.ramFrames);
    },
  });

  // No token: aggregates with bounded labels (event, result, origin, device kind), no pids, names or data,
  // so that a scraper needs no secret (docs/control-plane.md, Security).
  app.get('/metrics', { config: access('public') }, async (_req, reply) => {
    reply.type(reg.contentType);
    k.flushObservers();
    return reg.metrics();
  });
  return reg;
}
