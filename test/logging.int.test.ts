/** pino structured logs: each device logs through a child logger carrying its identity. */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { PROT } from '../src/kernel/kernel.js';
import { startHarness } from './channel/helpers.js';
import { eventually } from './helpers/eventually.js';

describe('logging', () => {
  it('worker and external devices log through child loggers with device, deviceId, kind and transport', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const h = await startHarness({ logger: pino({ level: 'info' }, sink), deadlineMs: 300 });
    try {
      const k = h.svc.kernel;
      const p = k.createProcess('app');
      const a = await k.mmap(p.pid, { length: 4 * 4096, prot: PROT.READ | PROT.WRITE });
      await k.write(p.pid, a, new Uint8Array(4 * 4096).fill(1));
      const dev = await h.svc.devices.create({ kind: 'dmirror', pid: p.pid, name: 'dm-log' });
      await dev.command('read', { addr: a, npages: 1 });
      await dev.inject({ hang: true });
      await k.munmap(p.pid, a, 4 * 4096); // evicts the hung device
      await eventually(() => lines.some((l) => l.msg === 'evicting device'));
      expect(lines.find((l) => l.msg === 'evicting device')).toMatchObject({ level: 40, device: 'dm-log', deviceId: dev.id, kind: 'dmirror', transport: 'worker' });
      const c = h.client({ name: 'ext-log', kind: 'gpu' });
      await c.connect();
      await eventually(() => lines.some((l) => l.msg === 'external device connected'));
      expect(lines.find((l) => l.msg === 'external device connected')).toMatchObject({ device: 'ext-log', kind: 'gpu', transport: 'external' });
      expect(lines.some((l) => l.level === 40 && String(l.msg).includes('DEVMIRROR_TOKENS'))).toBe(true);
    } finally {
      await h.close();
    }
  });
});
