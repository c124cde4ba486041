/** The hot-path metrics expose exactly what prom-client's own Counter and Histogram expose. */
import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { HotCounter, HotHistogram } from '../../src/http/hot-metrics.js';

const BUCKETS = [5e-6, 10e-6, 25e-6, 1e-3, 1, 10];

describe('hot metrics', () => {
  it('a histogram exposes the same text as prom-client for the same observations', async () => {
    const a = new Registry();
    const b = new Registry();
    const ref = new Histogram({ name: 'x_seconds', help: 'h', labelNames: ['event', 'device_kind'], buckets: BUCKETS, registers: [a] });
    const hot = new HotHistogram('x_seconds', 'h', BUCKETS);
    b.registerMetric(hot as never);
    const obs: Array<[string, string, number]> = [
      ['UNMAP', 'gpu', 3e-6],
      ['UNMAP', 'gpu', 5e-6],
      ['UNMAP', 'gpu', 2e-3],
      ['CLEAR', 'rdma', 0],
      ['CLEAR', 'rdma', 11],
      ['UNMAP', 'dmirror', 0.5],
    ];
    for (const [event, kind, v] of obs) {
      ref.observe({ event, device_kind: kind }, v);
      hot.observe(`${event}\0${kind}`, v, (e, k) => ({ event: e, device_kind: k }), event, kind);
    }
    const text = await b.metrics();
    expect(text).toBe(await a.metrics());
    expect(text).toContain('x_seconds_bucket{le="+Inf",event="CLEAR",device_kind="rdma"} 2');
    hot.reset();
    ref.reset();
    expect(await b.metrics()).toBe(await a.metrics());
  });

  it('a counter exposes the same text as prom-client for the same increments', async () => {
    const a = new Registry();
    const b = new Registry();
    const ref = new Counter({ name: 'y_total', help: 'c', labelNames: ['event', 'result'], registers: [a] });
    const hot = new HotCounter('y_total', 'c');
    b.registerMetric(hot as never);
    for (const [event, result] of [['UNMAP', 'ok'], ['UNMAP', 'ok'], ['CLEAR', 'refused']]) {
      ref.inc({ event, result });
      hot.inc(`${event}\0${result}`, (e, r) => ({ event: e, result: r }), event, result);
    }
    expect(await b.metrics()).toBe(await a.metrics());
    expect(await b.metrics()).toContain('y_total{event="UNMAP",result="ok"} 2');
  });
});
