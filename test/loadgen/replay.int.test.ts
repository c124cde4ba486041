/**
 * Replay of real programs' address-space histories (strace fixtures captured on this kind of
 * machine, and one captured live when strace is installed) with devices attached.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_BENCH, runBench } from '../../src/loadgen/runner.js';
import { parseStrace } from '../../src/loadgen/strace.js';
import { replayTrace } from '../../src/loadgen/replay.js';
import { Kernel } from '../../src/kernel/kernel.js';

const hasStrace = spawnSync('strace', ['-V']).status === 0;
if (!hasStrace && process.env.CI === 'true') throw new Error('strace is required under CI=true (apt-get install strace)');

describe('strace replay', () => {
  // Each program's signature: how many mappings it makes at least, and the event its history is
  // made of (see bench/fixtures/strace/README.md).
  const fixtures = [
    { name: 'node-alloc', minMappings: 100, event: 'UNMAP' },
    { name: 'python-list', minMappings: 100, event: 'UNMAP' },
    { name: 'java-collections', minMappings: 100, event: 'PROTECTION_VMA' },
    { name: 'boehm-gc-incremental', minMappings: 40, event: 'PROTECTION_VMA' },
  ];
  for (const { name: fixture, minMappings, event } of fixtures) {
    it(`replays ${fixture} with all four devices attached, sanitizer-clean`, async () => {
      const r = await runBench({ ...DEFAULT_BENCH, durationMs: undefined, ops: undefined, dmaRate: 500, replay: { file: `bench/fixtures/strace/${fixture}.strace` } });
      expect(r.replay!.events).toBeGreaterThan(900);
      expect(r.replay!.replayed / r.replay!.calls).toBeGreaterThan(0.8);
      expect(r.replay!.mappings).toBeGreaterThan(minMappings);
      expect(r.replay!.touchedPages).toBeGreaterThan(100);
      // Every call the real program made succeeds in the replay: what execve had mapped is mapped
      // when a call needs it, and every advice in the fixtures is modelled (node's MADV_DONTFORK too).
      expect(r.replay!.refused).toEqual({});
      expect(r.replay!.replayed).toBe(r.replay!.calls);
      expect(r.replay!.imageMappings).toBeGreaterThan(0);
      expect(r.events.map((e) => e.event)).toContain(event);
      expect(r.totals.findings).toBe(0);
      expect(r.totals.checked).toBeGreaterThan(0);
      expect(r.devices.map((d) => `${d.name}:${d.state}${d.stateReason ? ` (${d.stateReason})` : ''}`)).toEqual(r.devices.map((d) => `${d.name}:running`));
    });
  }

  it('replays python-list (pyenv shell shims around one python3) into one address space per exec, the devices on python3', async () => {
    const r = await runBench({ ...DEFAULT_BENCH, durationMs: undefined, ops: undefined, dmaRate: 0, devices: { dmirror: 1 }, replay: { file: 'bench/fixtures/strace/python-list.strace' } });
    const spaces = r.replay!.spaces;
    expect(spaces.length).toBeGreaterThan(30);
    const target = spaces.filter((s) => s.target);
    expect(target).toHaveLength(1);
    // python3 is the image with by far the most memory calls; the shims before it exec'd away or exited, and their processes exited.
    expect(target[0].memoryCalls).toBeGreaterThan(300);
    expect(spaces.every((s) => s.target || s.memoryCalls < 100)).toBe(true);
    expect(spaces.filter((s) => !s.target).every((s) => s.exited && s.ended !== null)).toBe(true);
    expect(r.totals.findings).toBe(0);
    // The HTML report lists them, the devices' one marked.
    const { renderHtml } = await import('../../src/loadgen/report-html.js');
    const html = renderHtml(r);
    expect(html.match(/<tr><td>\d+( \(devices\))?<\/td>/g)).toHaveLength(spaces.length);
    expect(html).toContain(`<tr><td>${target[0].index} (devices)</td>`);
  });

  it('takes the devices\' address space from --replay-space or the scenario, and refuses one the trace does not have', async () => {
    const { parseBenchArgs } = await import('../../src/loadgen/cli.js');
    expect(parseBenchArgs(['--replay', 'bench/fixtures/strace/python-list.strace', '--replay-space', '3']).options.replay).toMatchObject({ space: 3 });
    for (const bad of [['--replay', 'x.strace', '--replay-space', 'two'], ['--replay-space', '1', '--ops', '1']]) {
      expect(() => parseBenchArgs(bad), bad.join(' ')).toThrow(expect.objectContaining({ code: 'DM_ERR_VALIDATION' }));
    }
    await expect(runBench({ ...DEFAULT_BENCH, durationMs: undefined, ops: undefined, devices: { dmirror: 1 }, replay: { file: 'bench/fixtures/strace/boehm-gc-incremental.strace', space: 1 } })).rejects.toMatchObject({
      code: 'DM_ERR_VALIDATION',
      message: expect.stringContaining('has 1 address space (0 to 0)'),
    });
    await expect(runBench({ ...DEFAULT_BENCH, durationMs: undefined, ops: undefined, devices: { dmirror: 1 }, replay: { file: 'bench/fixtures/strace/boehm-gc-incremental.strace', space: -1 } })).rejects.toMatchObject({ code: 'DM_ERR_VALIDATION' });
  });

  it('gives each address space its own process, exits the ones whose tasks end, and maps what execve mapped when a call needs it', async () => {
    const line = (pid: number, i: number, call: string): string => `${pid}  10:00:00.${String(i).padStart(6, '0')} ${call}`;
    const L = 0x7f0000000000; // the launcher's mapping
    const P = 0x7f1000000000; // the program's
    const RELRO = 0x555600010000; // in the program's image: mapped by execve, not in the trace
    const text = [
      line(1, 1, 'brk(NULL) = 0x555500000000'),
      line(1, 2, `mmap(NULL, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = ${'0x' + L.toString(16)}`),
      line(2, 3, 'brk(NULL) = 0x555600100000'),
      line(2, 4, `mprotect(${'0x' + RELRO.toString(16)}, 8192, PROT_READ) = 0`),
      line(2, 5, `mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = ${'0x' + P.toString(16)}`),
      line(1, 6, '+++ exited with 0 +++'),
      line(2, 7, `munmap(${'0x' + (P + 0x8000).toString(16)}, 4096) = 0`),
    ].join('\n');
    const t = parseStrace(text);
    for (const space of [undefined, 0]) {
      const k = new Kernel({ memoryBytes: 64 << 20 });
      const p = k.createProcess('devices');
      const st = await replayTrace(k, p, t, { timeScale: 0, density: 0, maxTouchPages: 256, space }, () => undefined);
      expect(st.refused).toEqual({});
      expect(st.replayed).toBe(6);
      expect(st.imageMappings).toBe(1);
      const [launcher, program] = st.spaces;
      expect(program.target).toBe(space === undefined); // the main space by default: four memory calls against two
      const target = space === 0 ? launcher : program;
      const other = space === 0 ? program : launcher;
      expect(target.pid).toBe(p.pid);
      expect(p.mm.vmas.covers(space === 0 ? L : P, (space === 0 ? L : P) + 4096)).toBe(true);
      expect(p.mm.vmas.find(space === 0 ? P : L)).toBeNull(); // the other program's mappings are not in the devices' process
      if (space === undefined) {
        // The launcher's process exited with its task; the image mapping holds the RELRO, read-only now.
        expect(launcher.exited).toBe(true);
        expect(k.findProcess(launcher.pid)).toBeUndefined();
        expect(p.mm.vmas.find(RELRO)).toMatchObject({ prot: 1 });
        expect(p.mm.vmas.find(P + 0x8000)).toBeNull(); // the program's munmap
        expect(p.mm.vmas.find(P + 0x9000)).not.toBeNull();
      } else {
        // The devices' process is never exited; the program's lives on at the trace's end.
        expect(launcher.exited).toBe(false);
        expect(other.ended).toBeNull();
        expect(k.findProcess(other.pid)).toBeDefined();
      }
      expect(k.audit().problems).toEqual([]);
    }
  });

  it('remembers the pages it wrote, as the program keeps, moves and discards them (what devices work on)', async () => {
    const A = 0x7f0000000000;
    const B = 0x7f0000100000;
    const trace = parseStrace(
      [
        `1 10:00:00.000001 mmap(NULL, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = ${'0x' + A.toString(16)}`,
        `1 10:00:00.000002 madvise(${'0x' + (A + 0xf000).toString(16)}, 4096, MADV_DONTNEED) = 0`,
        `1 10:00:00.000003 mmap(NULL, 32768, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = ${'0x' + B.toString(16)}`,
        `1 10:00:00.000004 mprotect(${'0x' + (B + 0x2000).toString(16)}, 4096, PROT_READ|PROT_WRITE) = 0`,
        `1 10:00:00.000005 mremap(${'0x' + A.toString(16)}, 65536, 65536, MREMAP_MAYMOVE|MREMAP_FIXED, ${'0x' + (A + 0x200000).toString(16)}) = ${'0x' + (A + 0x200000).toString(16)}`,
      ].join('\n'),
    );
    const k = new Kernel({ memoryBytes: 64 << 20 });
    const p = k.createProcess('w');
    const seen: number[][] = [];
    const st = await replayTrace(k, p, trace, { timeScale: 0, density: 0, maxTouchPages: 256 }, (_i, _s, _w, _last, written) => {
      seen.push(written(0, 2 ** 47, 1000));
    });
    expect(st.replayed).toBe(5);
    const pg = (base: number, ...i: number[]): number[] => i.map((n) => base + n * 4096);
    expect(seen[0]).toEqual(pg(A, 0, 15)); // density 0: the first and the last page of a new writable mapping
    expect(seen[1]).toEqual(pg(A, 0)); // DONTNEED discarded the last one
    expect(seen[2]).toEqual(pg(A, 0)); // a read-only mapping writes nothing
    expect(seen[3]).toEqual([...pg(A, 0), ...pg(B, 2)]); // a page made writable is written
    expect(seen[4]).toEqual([...pg(B, 2), ...pg(A + 0x200000, 0)]); // the data moved with the mapping
    expect(k.audit().problems).toEqual([]);
  });

  it.skipIf(!hasStrace)('captures a program live with strace and replays it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'devmirror-strace-'));
    const out = join(dir, 'live.strace');
    execFileSync('strace', ['-f', '-tt', '-e', 'trace=memory,openat,close', '-o', out, 'python3', '-c', 'x = bytearray(32 << 20); x[::4096] = b"a" * len(x[::4096]); del x'], { stdio: 'ignore' });
    const t = parseStrace(readFileSync(out, 'utf8'));
    expect(t.events.some((e) => e.op.kind === 'mmap' && e.op.length >= 32 << 20)).toBe(true); // the 32 MiB bytearray
    const k = new Kernel({ memoryBytes: 256 << 20 });
    const p = k.createProcess('live');
    const s = await replayTrace(k, p, t);
    expect(s.replayed).toBeGreaterThan(0.8 * s.calls);
    // The loader's RELRO mprotects land in what execve mapped: nothing the program did is refused.
    expect(Object.keys(s.refused).filter((key) => !key.endsWith('not modelled'))).toEqual([]);
    expect(s.spaces.filter((sp) => sp.target)).toHaveLength(1);
    expect(k.audit().problems).toEqual([]);
  });
});
