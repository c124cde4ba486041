/**
 * The bare `ws` fan-out floor the channel bench measures devmirror against: connections spread
 * over client processes that echo every frame, the processes' ids (the bench pins them), and a
 * clean close.
 */
import { describe, expect, it } from 'vitest';
import { openFanoutFloor, openProtocolFloor } from '../../src/loadgen/client-processes.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('openFanoutFloor', () => {
  it('spreads n connections over at most maxProcs echoing processes, names them, and stops them on close', async () => {
    const floor = await openFanoutFloor(48, 5, 2);
    let pids: readonly number[] = [];
    try {
      expect(floor.connections).toBe(5);
      pids = floor.pids;
      expect(pids).toHaveLength(2);
      expect(new Set(pids).size).toBe(2);
      for (const pid of pids) {
        expect(pid).not.toBe(process.pid);
        expect(alive(pid)).toBe(true);
      }
      // A round resolves once every connection echoed the frame: a positive duration, again and again.
      for (let i = 0; i < 20; i++) expect(await floor.round()).toBeGreaterThan(0);
    } finally {
      await floor.close();
    }
    // The processes exit once their stdin ends.
    const deadline = Date.now() + 20_000;
    while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(pids.filter(alive)).toEqual([]);
  });
});

describe('openProtocolFloor', () => {
  it.each([
    { end: true, cork: true },
    { end: false, cork: true },
    { end: true, cork: false },
  ])('runs start/ack rounds (end frames $end, cork $cork) with one client process (each ack names its start; the ends decode), and stops it on close', async (o) => {
    const floor = await openProtocolFloor(o);
    let pids: readonly number[] = [];
    try {
      expect(floor.connections).toBe(1);
      pids = floor.pids;
      expect(pids).toHaveLength(1);
      expect(pids[0]).not.toBe(process.pid);
      expect(alive(pids[0])).toBe(true);
      // A round ends at its own ack (another id rejects); the client decodes each End that leaves
      // with the next Start (a client that failed to would die, and the next round never end).
      for (let i = 0; i < 50; i++) expect(await floor.round()).toBeGreaterThan(0);
      expect(alive(pids[0])).toBe(true);
    } finally {
      await floor.close();
    }
    const deadline = Date.now() + 20_000;
    while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(pids.filter(alive)).toEqual([]);
  });
});
