import { describe, expect, it } from 'vitest';
import { parseStrace } from '../../src/loadgen/strace.js';

const TRACE = `
4242  10:00:00.000001 brk(NULL)         = 0x5555000
4242  10:00:00.000002 openat(AT_FDCWD, "/lib/libc.so.6", O_RDONLY|O_CLOEXEC) = 3
4242  10:00:00.000003 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
4243  10:00:00.000004 mmap(0x7f1000000000, 4096, PROT_READ, MAP_SHARED, 3, 0 <unfinished ...>
4242  10:00:00.000005 mprotect(0x7f0000000000, 4096, PROT_NONE) = 0
4243  10:00:00.000006 <... mmap resumed>) = 0x7f1000000000
4242  10:00:00.000007 munmap(0x7f0000000000, 8192) = 0
4242  10:00:00.000008 mmap(NULL, 1099511627776, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0) = -1 ENOMEM (Cannot allocate memory)
4242  10:00:00.000009 madvise(0x7f1000000000, 4096, MADV_DONTNEED) = 0
4242  10:00:00.000010 mremap(0x7f1000000000, 4096, 8192, MREMAP_MAYMOVE) = 0x7f2000000000
4242  10:00:00.000011 brk(0x5576000)    = 0x5576000
4242  10:00:00.000012 close(3)          = 0
4242  10:00:00.000013 --- SIGCHLD {si_signo=SIGCHLD} ---
4242  10:00:00.000014 +++ exited with 0 +++
10:00:01.5 munmap(0x7f2000000000, 8192) = 0
`;

describe('strace parser', () => {
  it('parses memory calls, files, unfinished/resumed pairs and exits, and skips failures and signals', () => {
    const t = parseStrace(TRACE);
    expect(t.skipped).toBe(0);
    expect(t.events.map((e) => e.op.kind)).toEqual(['brk', 'open', 'mmap', 'mprotect', 'mmap', 'munmap', 'madvise', 'mremap', 'brk', 'close', 'munmap']);
    expect(t.pids.sort()).toEqual([0, 4242, 4243]);
    const shared = t.events[4];
    expect(shared).toMatchObject({ pid: 4243, op: { kind: 'mmap', addr: 0x7f1000000000, length: 4096, prot: 1, fd: 3, result: 0x7f1000000000 } });
    expect((shared.op as { flags: string[] }).flags).toEqual(['MAP_SHARED']);
    expect(t.events[1].op).toEqual({ kind: 'open', path: '/lib/libc.so.6', fd: 3 });
    expect(t.events[7].op).toMatchObject({ kind: 'mremap', oldLength: 4096, newLength: 8192, result: 0x7f2000000000 });
    expect(t.events[8].op).toEqual({ kind: 'brk', addr: 0x5576000, result: 0x5576000 });
    expect(t.events[0].t).toBeCloseTo(36000.000001, 6);
    expect(t.events[10].pid).toBe(0); // a line without a pid column (strace without -f)
    // The exit is kept apart from the calls, with its place among them (after the 10th call).
    expect(t.exits.map((e) => [e.pid, e.before])).toEqual([[4242, 10]]);
    expect(t.exits[0].t).toBeCloseTo(36000.000014, 6);
  });

  it('counts a resumed call whose start it never saw as skipped', () => {
    expect(parseStrace('7 10:00:00.1 <... mmap resumed>) = 0x1000').skipped).toBe(1);
  });
});

describe('sharded parsing', () => {
  it('parses on a piscina thread with the same result as inline, and shuts the pool down', async () => {
    const { readFileSync } = await import('node:fs');
    const { parseStraceSharded, closeShards } = await import('../../src/loadgen/shards.js');
    const text = readFileSync('bench/fixtures/strace/node-alloc.strace', 'utf8');
    try {
      const pooled = await parseStraceSharded(text, 0);
      expect(pooled).toEqual(parseStrace(text));
      expect(pooled.events.length).toBe(1864);
    } finally {
      await closeShards();
    }
  });
});
