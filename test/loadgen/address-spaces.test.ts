import { describe, expect, it } from 'vitest';
import { parseStrace } from '../../src/loadgen/strace.js';
import { planAddressSpaces } from '../../src/loadgen/address-spaces.js';

/** One strace line per call: `pid call = result`, timestamps in order. */
const trace = (lines: string[]): string => lines.map((l, i) => l.replace(/^(\d+) /, `$1  10:00:00.${String(i + 1).padStart(6, '0')} `)).join('\n');

describe('address spaces of a trace (exec, threads, exits)', () => {
  it('starts a new address space at each exec (a brk(NULL) with a new break), joins threads and forked children to the live one, and ends spaces with their last task', () => {
    const t = parseStrace(
      trace([
        '1 brk(NULL) = 0x555500000000', // 0: the launcher's image
        '1 brk(NULL) = 0x555500000000', // 1: the loader asks again: a query
        '1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000', // 2
        '2 close(3) = 0', // 3: a forked child, before its exec: the launcher's space
        '2 brk(NULL) = 0x566600000000', // 4: it exec'd: a new break, a new space
        '2 mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f1000000000', // 5
        '3 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f1000100000', // 6: a thread of the last caller (2)
        '4 mprotect(0x7f0000000000, 4096, PROT_READ) = 0', // 7: a new task naming the launcher's mapping: the launcher's
        '1 +++ exited with 0 +++',
        '4 +++ exited with 0 +++', // the launcher's last task: its space ends before event 8
        '5 brk(NULL) = 0x566600000000', // 8: a forked child asking for its parent's break: joins 2's space
        '2 munmap(0x7f1000000000, 65536) = 0', // 9
        '5 +++ exited with 0 +++',
      ]),
    );
    expect(t.exits.map((e) => [e.pid, e.before])).toEqual([
      [1, 8],
      [4, 8],
      [5, 10],
    ]);
    const plan = planAddressSpaces(t);
    expect([...plan.of]).toEqual([0, 0, 0, 0, 1, 1, 1, 0, 1, 1]);
    expect(plan.spaces).toEqual([
      { index: 0, firstPid: 1, pids: [1, 2, 4], calls: 5, memoryCalls: 4, brk: 0x555500000000, ended: 'exit', endsBefore: 8 },
      { index: 1, firstPid: 2, pids: [2, 3, 5], calls: 5, memoryCalls: 5, brk: 0x566600000000, ended: null, endsBefore: -1 },
    ]);
    expect(plan.main).toBe(1);
  });

  it('ends an address space when its last task execs away, and learns the break of one whose start the trace missed', () => {
    const t = parseStrace(
      trace([
        '7 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000', // strace attached late
        '7 brk(NULL) = 0x555500000000', // a query that teaches the break, not an exec
        '7 brk(NULL) = 0x555500000000',
        '7 brk(NULL) = 0x577700000000', // an exec
        '7 munmap(0x7f0000000000, 4096) = 0', // the new image has no such mapping, but the call is its own
      ]),
    );
    const plan = planAddressSpaces(t);
    expect([...plan.of]).toEqual([0, 0, 0, 1, 1]);
    expect(plan.spaces.map((s) => [s.brk, s.ended, s.endsBefore])).toEqual([
      [null, 'exec', 3],
      [0x577700000000, null, -1],
    ]);
    expect(plan.main).toBe(0); // three memory calls against two
  });

  it('puts a trace without a pid column in one address space', () => {
    const t = parseStrace(['10:00:00.000001 brk(NULL) = 0x1000000', '10:00:00.000002 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000'].join('\n'));
    const plan = planAddressSpaces(t);
    expect(plan.spaces).toHaveLength(1);
    expect([...plan.of]).toEqual([0, 0]);
  });
});
