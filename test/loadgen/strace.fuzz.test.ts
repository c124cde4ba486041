/**
 * Fuzzing the strace parser (issue #8), property-based with fast-check: arbitrary text, lines built
 * from strace's grammar with random arguments, and mutations of the real fixtures
 * (bench/fixtures/strace/*.strace).
 *
 * parseStrace's contract (src/loadgen/strace.ts): a line that looks like a traced call but cannot
 * be parsed is counted in `skipped`; everything else is ignored. So a parse returns, for any text,
 * a well-formed trace (every event of a known kind with finite numbers, `pids` the set of the
 * events' pids); the one error it may throw is the catalogue's DM_ERR_VALIDATION (what --replay
 * reports), never another exception. Inputs are bounded (at most ~1 MB), and each parse must stay
 * fast: linear, no catastrophic regex backtracking. Every parsed trace also gets a well-formed
 * address-space plan (checkPlan).
 *
 * fast-check chooses the seed; a failure prints the seed, the path and the shrunk input.
 */
import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseStrace, type ParsedTrace } from '../../src/loadgen/strace.js';
import { DevmirrorError } from '../../src/errors.js';
import { planAddressSpaces } from '../../src/loadgen/address-spaces.js';

const FIXTURES = new URL('../../bench/fixtures/strace/', import.meta.url);
const fixtureLines = readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.strace'))
  .flatMap((f) => readFileSync(new URL(f, FIXTURES), 'utf8').split('\n'))
  .filter((l) => l.trim() !== '');

const KINDS = new Set(['mmap', 'munmap', 'mremap', 'mprotect', 'madvise', 'brk', 'open', 'close']);
const NUMERIC: Record<string, string[]> = {
  mmap: ['addr', 'length', 'prot', 'fd', 'offset', 'result'],
  munmap: ['addr', 'length'],
  mremap: ['addr', 'oldLength', 'newLength', 'result'],
  mprotect: ['addr', 'length', 'prot'],
  madvise: ['addr', 'length'],
  brk: ['addr', 'result'],
  open: ['fd'],
  close: ['fd'],
};

/**
 * The address-space plan of any parsed trace (src/loadgen/address-spaces.ts): every call in one
 * space, none in a space after it ended, the calls counted once, the main space the busiest.
 */
function checkPlan(r: ParsedTrace): void {
  const plan = planAddressSpaces(r);
  expect(plan.of.length).toBe(r.events.length);
  const calls = new Array<number>(plan.spaces.length).fill(0);
  for (let i = 0; i < plan.of.length; i++) {
    const sp = plan.spaces[plan.of[i]];
    expect(sp, `event ${i}`).toBeDefined();
    calls[sp.index]++;
    if (sp.endsBefore >= 0) expect(i, `event ${i} in space ${sp.index}, which ended before ${sp.endsBefore}`).toBeLessThan(sp.endsBefore);
    expect(sp.pids).toContain(r.events[i].pid);
  }
  expect(plan.spaces.map((s) => s.calls)).toEqual(calls);
  for (const s of plan.spaces) expect((s.ended === null) === (s.endsBefore < 0), `space ${s.index}`).toBe(true);
  if (plan.spaces.length > 0) expect(Math.max(...plan.spaces.map((s) => s.memoryCalls))).toBe(plan.spaces[plan.main].memoryCalls);
  else expect(r.events).toHaveLength(0);
}

/** Parses, and checks the result is a well-formed trace (or the error the documented one). */
function parseChecked(text: string): ParsedTrace | null {
  const t0 = performance.now();
  let r: ParsedTrace;
  try {
    r = parseStrace(text);
  } catch (e) {
    expect(e, `parseStrace threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`).toBeInstanceOf(DevmirrorError);
    expect((e as DevmirrorError).code).toBe('DM_ERR_VALIDATION');
    return null;
  }
  // Linear: a megabyte parses in well under a second, even on a slow, shared machine (bound 3 s).
  expect(performance.now() - t0, `parse of ${text.length} characters`).toBeLessThan(500 + text.length / 400);
  expect(Number.isSafeInteger(r.skipped) && r.skipped >= 0, `skipped ${r.skipped}`).toBe(true);
  const lines = text.split('\n').length;
  expect(r.events.length + r.skipped).toBeLessThanOrEqual(lines);
  for (const e of r.events) {
    const what = JSON.stringify(e);
    expect(KINDS.has(e.op.kind), what).toBe(true);
    expect(Number.isSafeInteger(e.pid) && e.pid >= 0, `pid of ${what}`).toBe(true);
    expect(Number.isFinite(e.t) && e.t >= 0, `time of ${what}`).toBe(true);
    for (const k of NUMERIC[e.op.kind]) expect(Number.isFinite((e.op as unknown as Record<string, number>)[k]), `${k} of ${what}`).toBe(true);
    if (e.op.kind === 'mmap' || e.op.kind === 'mremap') expect(e.op.flags.every((f) => typeof f === 'string'), what).toBe(true);
    if (e.op.kind === 'madvise') expect(typeof e.op.advice, what).toBe('string');
    if (e.op.kind === 'open') expect(typeof e.op.path, what).toBe('string');
  }
  expect([...r.pids].sort((a, b) => a - b)).toEqual([...new Set(r.events.map((e) => e.pid))].sort((a, b) => a - b));
  // Exits: a task's pid and its place among the calls, in order.
  let before = 0;
  for (const x of r.exits) {
    expect(Number.isSafeInteger(x.pid) && x.pid >= 0 && x.before >= before && x.before <= r.events.length, JSON.stringify(x)).toBe(true);
    before = x.before;
  }
  checkPlan(r);
  // Deterministic: the same text, the same trace.
  expect(parseStrace(text)).toEqual(r);
  return r;
}

// ---- generators ---------------------------------------------------------------------------------------

const number = fc.oneof(
  fc.nat().map(String),
  fc.nat().map((n) => `0x${n.toString(16)}`),
  fc.integer({ min: -100, max: -1 }).map(String),
  fc.constantFrom('NULL', '0', '-1', '0x7fffffffffff', '0xffffffffffffffff', '18446744073709551615', '9'.repeat(400), `0x${'f'.repeat(300)}`, '0x', '-0x10', '1e9', '4096.5', 'NaN'),
);
const flags = fc.array(fc.constantFrom('PROT_READ', 'PROT_WRITE', 'PROT_EXEC', 'PROT_NONE', 'MAP_PRIVATE', 'MAP_SHARED', 'MAP_ANONYMOUS', 'MAP_FIXED', 'MREMAP_MAYMOVE', 'O_RDONLY', 'MADV_DONTNEED', 'XYZ', ''), { minLength: 1, maxLength: 4 }).map((a) => a.join('|'));
const quoted = fc.string({ maxLength: 30 }).map((s) => JSON.stringify(s));
const arg = fc.oneof({ arbitrary: number, weight: 4 }, { arbitrary: flags, weight: 2 }, { arbitrary: quoted, weight: 1 }, { arbitrary: fc.constantFrom('AT_FDCWD', '{st_mode=S_IFREG|0644, st_size=1}', '[0, 1]', '"a\\"b,c"', '"unterminated', '...'), weight: 1 });
const callName = fc.oneof({ arbitrary: fc.constantFrom('mmap', 'munmap', 'mremap', 'mprotect', 'madvise', 'brk', 'openat', 'open', 'close'), weight: 6 }, { arbitrary: fc.constantFrom('read', 'clone', 'exit_group', 'constructor', 'toString', '__proto__', ''), weight: 1 });
const result = fc.oneof(
  number.map((n) => ` = ${n}`),
  fc.constantFrom(' = -1 ENOMEM (Cannot allocate memory)', ' = ?', '', ' =', ' = 0x', ' = <unavailable>', ' <unfinished ...>'),
);
const time = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.integer({ min: 0, max: 99 }), fc.nat(999_999)).map(([h, m, s, us]) => `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}.${us}`),
  fc.constantFrom('10:00:00', '1:2:3', '10:00:00.', 'xx:yy:zz'),
);
const pidCol = fc.oneof(fc.constant(''), fc.nat(100_000).map((p) => `${p}  `), fc.constantFrom('99999999999999999999999 ', `${'9'.repeat(400)} `, '-1 '));
/** A line of strace's grammar with random parts. */
const straceLine = fc.oneof(
  { arbitrary: fc.tuple(pidCol, time, callName, fc.array(arg, { maxLength: 7 }), result).map(([p, t, n, a, r]) => `${p}${t} ${n}(${a.join(', ')})${r}`), weight: 8 },
  { arbitrary: fc.tuple(pidCol, time, callName, result).map(([p, t, n, r]) => `${p}${t} <... ${n} resumed>${r.replace(' <unfinished ...>', '')}`), weight: 2 },
  { arbitrary: fc.tuple(pidCol, time).map(([p, t]) => `${p}${t} --- SIGSEGV {si_signo=SIGSEGV} ---`), weight: 1 },
  { arbitrary: fc.tuple(pidCol, time).map(([p, t]) => `${p}${t} +++ exited with 0 +++`), weight: 1 },
);

/** A fixture line changed a little: a cut, an insertion, a deletion, a number made huge or not a number. */
const mutatedLine = fc
  .tuple(
    fc.constantFrom(...fixtureLines),
    fc.array(
      fc.tuple(fc.constantFrom('cut', 'insert', 'delete', 'number', 'duplicate', 'swap'), fc.nat(), fc.nat(), fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom('(', ')', ',', '"', '=', ' ', '|', '\\', '<unfinished ...>', '<... mmap resumed>', '9'.repeat(400)))),
      { minLength: 1, maxLength: 4 },
    ),
  )
  .map(([line, muts]) => {
    let l = line;
    for (const [m, i, j, s] of muts) {
      const at = l.length ? i % l.length : 0;
      const to = Math.min(l.length, at + (j % 20));
      if (m === 'cut') l = l.slice(0, at);
      else if (m === 'insert') l = l.slice(0, at) + s + l.slice(at);
      else if (m === 'delete') l = l.slice(0, at) + l.slice(to);
      else if (m === 'number') l = l.replace(/0x[0-9a-f]+|\d+/i, s.length % 2 ? '9'.repeat(400) : 'NaN');
      else if (m === 'duplicate') l = l.slice(0, to) + l.slice(at);
      else l = l.slice(at) + l.slice(0, at);
    }
    return l;
  });

describe('strace parser fuzzing', () => {
  it('arbitrary text: a well-formed trace, never another exception', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 2000 }), fc.string({ unit: 'grapheme', maxLength: 500 }), fc.array(fc.string({ maxLength: 80 }), { maxLength: 50 }).map((l) => l.join('\n'))), (text) => {
        parseChecked(text);
      }),
      { numRuns: 300 },
    );
  });

  it("lines of strace's grammar with random arguments, results and pids", () => {
    fc.assert(
      fc.property(fc.array(straceLine, { minLength: 1, maxLength: 30 }), fc.constantFrom('\n', '\r\n'), (lines, eol) => {
        parseChecked(lines.join(eol));
      }),
      { numRuns: 300 },
    );
  });

  it('mutations of the real fixtures, mixed with intact lines', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(mutatedLine, fc.constantFrom(...fixtureLines)), { minLength: 1, maxLength: 40 }), (lines) => {
        parseChecked(lines.join('\n'));
      }),
      { numRuns: 300 },
    );
  });

  it('large inputs (up to ~1 MB) parse in linear time', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('1'.repeat(10), '1 10:00:00.1 a(' + ')', '1 10:00:00.1 mmap(' + ',', '1 10:00:00.1 openat("', '1 10:00:00.1 a(', '(', '"', ' ', '1 '),
        fc.integer({ min: 1000, max: 200_000 }),
        (unit, n) => {
          parseChecked(unit.repeat(Math.min(n, Math.floor(1_000_000 / unit.length))) + ') = 0');
        },
      ),
      { numRuns: 30 },
    );
  });

  it('regressions: a call with fewer arguments than it takes is skipped (was a TypeError from num(undefined)), as is a pid that is no number', () => {
    for (const line of ['1 10:00:00.1 mmap(NULL) = 0x1000', '1 10:00:00.1 mprotect(0x1000) = 0', '1 10:00:00.1 munmap() = 0', '1 10:00:00.1 close() = 0', '1 10:00:00.1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE) = 0x1000', '1 10:00:00.1 madvise(0x1000, 4096) = 0']) {
      expect(parseChecked(line), line).toMatchObject({ events: [], skipped: 1 });
    }
    expect(parseChecked(`${'9'.repeat(400)} 10:00:00.1 munmap(0x1000, 4096) = 0`)).toMatchObject({ events: [], skipped: 1 });
    // The whole fixtures still parse as before.
    expect(parseChecked(readFileSync(new URL('node-alloc.strace', FIXTURES), 'utf8'))?.events.length).toBe(1864);
  });
});
