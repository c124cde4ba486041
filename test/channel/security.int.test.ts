/**
 * Authorisation on the notifier channel, for every message kind a client can send (issue #8):
 *
 * (a) before a valid Hello, every frame but Hello is refused: the connection closes with 4000;
 * (b) a Hello without a token, with a wrong token or a forged worker token closes with 4401 (an
 *     unknown token at the upgrade is refused with HTTP 401), and frames pipelined behind such a
 *     Hello do nothing;
 * (c) a client whose token grants other processes only is refused for every request that names a
 *     process outside its grant (DM_ERR_FORBIDDEN Error frame), cannot touch another client's
 *     subscriptions, acknowledgements, young queries or commands (4000, and the other client's
 *     call stays pending), and never receives events of processes outside its grant.
 *
 * The message kinds come from the generated code (codec.clientFrameKinds) and are checked against
 * the .proto: a kind added to ClientFrame without a case in each table fails this file.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROT } from '../../src/kernel/kernel.js';
import { CLOSE } from '../../src/channel/close-codes.js';
import { clientFrameKinds, MigrateDirection, type ClientBody, type ClientFrameIn, type ServerFrame } from '../../src/channel/codec.js';
import { HMM_PFN } from '../../src/kernel/hmm.js';
import { startHarness, type Harness } from './helpers.js';
import { RawClient } from './raw-client.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const ALPHA = 'alpha-token-1';
const OMEGA = 'omega-token-1';
/** alpha: the process `mine` by name and pid 101 (`minebypid`, the second process created). */
const TOKENS = `${ALPHA}=mine,101;${OMEGA}=*`;

interface Proc {
  pid: number;
  addr: number;
}
let h: Harness;
let mine: Proc;
let minebypid: Proc;
let theirs: Proc;
/** The client with the `*` token, whose subscriptions alpha tries to use. */
let b: RawClient;
let bClientId = 0;
let bInterval = 0;
let bMm = 0;
/** What b does not answer (the test answers later). */
const hold = { acks: false, young: false, commands: false };

const kinds = clientFrameKinds();

/** The close code, or -1 if the socket is still open after 10 s (so a failing case fails fast). */
const closeCode = (c: RawClient): Promise<number> =>
  Promise.race([c.closed.then((x) => x.code), new Promise<number>((r) => setTimeout(() => r(-1), 10_000))]);

function errorCode(f: ServerFrame): string {
  return f.body === 'error' ? f.error.code : `no error: ${f.body}`;
}

async function newProc(name: string): Promise<Proc> {
  const k = h.svc.kernel;
  const p = k.createProcess(name);
  const addr = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
  await k.write(p.pid, addr, new Uint8Array(16 * PAGE).fill(p.pid & 0xff));
  return { pid: p.pid, addr };
}

/** Kernel-side state a refused frame must not change. */
function snapshot(): string {
  const k = h.svc.kernel;
  return JSON.stringify({
    subs: [mine, minebypid, theirs].map((p) => k.process(p.pid).mm.notifier.subscriberCount),
    devices: h.svc.channel.list().length,
    theirs: k.pagemap(theirs.pid, theirs.addr, 16).map((e) => [e.pfn, e.write, e.devicePrivate, e.exclusive]),
    bSubs: [...h.svc.channel.list().find((d) => d.id === bClientId)!.subs.keys()],
  });
}

function theirsPfn(i = 0): number {
  return h.svc.kernel.pagemap(theirs.pid, theirs.addr + i * PAGE, 1)[0].pfn as number;
}

/** One frame of each kind, aimed at `theirs` (or at b's objects) wherever the kind names something. */
const SAMPLE: Record<ClientBody, () => ClientFrameIn> = {
  hello: () => ({ hello: { protocolVersions: [1], token: OMEGA } }),
  subscribe: () => ({ subscribe: { kind: 2, pid: theirs.pid, start: theirs.addr, length: 16 * PAGE } }),
  unsubscribe: () => ({ unsubscribe: { subscriptionId: bInterval } }),
  invalidateAck: () => ({ invalidateAck: { invalidationId: 1, subscriptionId: bInterval } }),
  youngReply: () => ({ youngReply: { queryId: 1, young: true } }),
  readBegin: () => ({ readBegin: { subscriptionId: bInterval } }),
  rangeFault: () => ({ rangeFault: { subscriptionId: bInterval, notifierSeq: 0, start: theirs.addr, end: theirs.addr + PAGE, defaultFlags: HMM_PFN.REQ_FAULT } }),
  dma: () => ({ dma: { pid: theirs.pid, addr: theirs.addr, pfn: theirsPfn(), write: true, data: new Uint8Array(8).fill(0xee) } }),
  stats: () => ({ stats: { counters: { injected: 1 } } }),
  commandReply: () => ({ requestId: 1, commandReply: { ok: true, valueJson: '1' } }),
  gup: () => ({ gup: { pid: theirs.pid, addr: theirs.addr, write: true } }),
  vma: () => ({ vma: { pid: theirs.pid, addr: theirs.addr } }),
  migrate: () => ({ migrate: { pid: theirs.pid, direction: MigrateDirection.TO_DEVICE, start: theirs.addr, end: theirs.addr + PAGE } }),
  exclusive: () => ({ exclusive: { pid: theirs.pid, addr: theirs.addr } }),
  evictDeviceMemory: () => ({ evictDeviceMemory: {} }),
};

beforeAll(async () => {
  h = await startHarness({ tokens: TOKENS, deadlineMs: 60_000, kernel: { memoryBytes: 32 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 } });
  mine = await newProc('mine');
  minebypid = await newProc('minebypid');
  theirs = await newProc('theirs');
  expect([mine.pid, minebypid.pid]).toEqual([100, 101]); // the grant above names pid 101
  b = await RawClient.open(h.url, OMEGA);
  b.onFrame = (f) => {
    if (f.body === 'invalidateStart' && !hold.acks) b.send({ invalidateAck: { invalidationId: f.invalidateStart.invalidationId, subscriptionId: f.invalidateStart.subscriptionId } });
    if (f.body === 'release') b.send({ invalidateAck: { invalidationId: f.release.invalidationId, subscriptionId: f.release.subscriptionId } });
    if (f.body === 'youngQuery' && !hold.young) b.send({ youngReply: { queryId: f.youngQuery.queryId, young: false } });
    if (f.body === 'command' && !hold.commands) b.send({ requestId: f.requestId, commandReply: { ok: true, valueJson: '"from b"' } });
  };
  bClientId = (await b.hello(OMEGA, { clientName: 'b' })).clientId;
  const si = await b.request({ subscribe: { kind: 2, pid: theirs.pid, start: theirs.addr, length: 16 * PAGE } });
  const sm = await b.request({ subscribe: { kind: 1, pid: theirs.pid, wantsYoung: true } });
  if (si.body !== 'subscribed' || sm.body !== 'subscribed') throw new Error('b could not subscribe');
  bInterval = Number(si.subscribed.subscriptionId);
  bMm = Number(sm.subscribed.subscriptionId);
  // b owns a page of device memory in `theirs` (its last page).
  const mg = await b.request({ migrate: { pid: theirs.pid, direction: MigrateDirection.TO_DEVICE, start: theirs.addr + 15 * PAGE, end: theirs.addr + 16 * PAGE } });
  expect(mg.body === 'migrateReply' && mg.migrateReply.moved).toBe(1);
  expect(h.svc.kernel.pagemap(theirs.pid, theirs.addr + 15 * PAGE, 1)[0].devicePrivate).toBe(bClientId);
});
afterAll(async () => {
  b?.terminate();
  await h?.close();
});

describe('the message kinds', () => {
  it('come from the schema: every oneof member of ClientFrame in notifier.proto, and every table has a case for each', () => {
    const proto = readFileSync(new URL('../../proto/devmirror/v1/notifier.proto', import.meta.url), 'utf8');
    const oneof = /message ClientFrame \{[\s\S]*?oneof body \{([\s\S]*?)\}/.exec(proto)![1];
    const camel = (s: string): string => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const fromProto = [...oneof.matchAll(/^\s*\w+\s+(\w+)\s*=\s*\d+;/gm)].map((m) => camel(m[1]));
    expect(kinds).toEqual(fromProto);
    expect(kinds.length).toBeGreaterThanOrEqual(15);
    for (const table of [SAMPLE, RESTRICTED]) expect(Object.keys(table).sort()).toEqual([...kinds].sort());
  });
});

describe('(a) before a valid Hello', () => {
  for (const kind of kinds) {
    it(`${kind} as the first frame`, async () => {
      const before = snapshot();
      const c = await RawClient.open(h.url, ALPHA); // a valid token at the upgrade: only the order is wrong
      c.send({ requestId: 7, ...SAMPLE[kind]() });
      if (kind === 'hello') {
        // The only frame a connection may start with (with its own valid token).
        await c.next((f) => f.body === 'welcome');
        c.terminate();
        await c.closed;
        return;
      }
      expect((await closeCode(c))).toBe(CLOSE.PROTOCOL);
      expect(c.frames).toEqual([]);
      await eventually(() => expect(snapshot()).toBe(before));
    });
  }
});

describe('(b) a Hello without a valid token', () => {
  const BAD: Array<[string, string]> = [
    ['no token', ''],
    ['a wrong token', 'not-a-known-token'],
    ['a forged worker token', `worker:1:${'0'.repeat(32)}`],
    ['a token differing in its last character', OMEGA.slice(0, -1) + 'x'],
  ];
  for (const [what, token] of BAD) {
    it(`${what}: 4401, and no frame kind pipelined behind it does anything`, async () => {
      for (const kind of kinds) {
        const before = snapshot();
        const c = await RawClient.open(h.url);
        c.send({ hello: { protocolVersions: [1], token } });
        c.send({ requestId: 7, ...SAMPLE[kind]() });
        expect((await closeCode(c)), kind).toBe(CLOSE.UNAUTHORIZED);
        expect(c.frames, kind).toEqual([]);
        expect(snapshot(), kind).toBe(before);
      }
    });
  }

  it('a wrong token in the Hello is refused even when the upgrade carried a valid one', async () => {
    const c = await RawClient.open(h.url, OMEGA);
    c.send({ hello: { protocolVersions: [1], token: 'not-a-known-token' } });
    expect((await closeCode(c))).toBe(CLOSE.UNAUTHORIZED);
  });

  it('an unknown token at the upgrade is refused with HTTP 401 before any WebSocket exists', async () => {
    await expect(RawClient.open(h.url, 'not-a-known-token')).rejects.toMatchObject({ status: 401, body: expect.stringContaining('DM_ERR_UNAUTHORIZED') });
    await expect(RawClient.open(`${h.url}?token=not-a-known-token`)).rejects.toMatchObject({ status: 401 });
  });
});

/** A fresh alpha client, subscribed to its own processes (so that refusals are about the grant). */
async function alpha(): Promise<{ c: RawClient; ownInterval: number; ownMm: number }> {
  const c = await RawClient.open(h.url, ALPHA);
  c.onFrame = (f) => {
    if (f.body === 'invalidateStart') c.send({ invalidateAck: { invalidationId: f.invalidateStart.invalidationId, subscriptionId: f.invalidateStart.subscriptionId } });
    if (f.body === 'release') c.send({ invalidateAck: { invalidationId: f.release.invalidationId, subscriptionId: f.release.subscriptionId } });
    if (f.body === 'youngQuery') c.send({ youngReply: { queryId: f.youngQuery.queryId, young: false } });
  };
  const w = await c.hello(ALPHA, { clientName: 'alpha' });
  expect([...w.pids].sort()).toEqual([mine.pid, minebypid.pid]);
  const si = await c.request({ subscribe: { kind: 2, pid: mine.pid, start: mine.addr, length: 16 * PAGE } });
  const sm = await c.request({ subscribe: { kind: 1, process: 'mine', wantsYoung: true } });
  if (si.body !== 'subscribed' || sm.body !== 'subscribed') throw new Error('alpha could not subscribe to its own process');
  return { c, ownInterval: Number(si.subscribed.subscriptionId), ownMm: Number(sm.subscribed.subscriptionId) };
}

async function forbidden(c: RawClient, f: ClientFrameIn): Promise<void> {
  expect(errorCode(await c.request(f)), JSON.stringify(f, (_k, v) => (v instanceof Uint8Array ? `${v.length} bytes` : v))).toBe('DM_ERR_FORBIDDEN');
}

/** The next frame of this body b received at or after index `from` that no earlier call returned. */
function bHeld<K extends ServerFrame['body']>(body: K, from: number): Promise<Extract<ServerFrame, { body: K }>> {
  return b.next((f) => f.body === body && !seen.has(f) && b.frames.indexOf(f) >= from).then((f) => {
    seen.add(f);
    return f as Extract<ServerFrame, { body: K }>;
  });
}
const seen = new Set<ServerFrame>();

const settled = async (p: Promise<unknown>): Promise<boolean> => {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setTimeout(r, 100));
  return done;
};

const RESTRICTED: Record<ClientBody, () => Promise<void>> = {
  async hello() {
    // A second Hello cannot swap the token for a wider one: it is a protocol error.
    const { c } = await alpha();
    const dev = h.svc.channel.list().at(-1)!;
    expect(dev.grant?.token).toBe(ALPHA);
    c.send({ hello: { protocolVersions: [1], token: OMEGA } });
    expect((await closeCode(c))).toBe(CLOSE.PROTOCOL);
    expect(dev.grant?.token).toBe(ALPHA);
  },
  async subscribe() {
    const { c } = await alpha();
    const before = snapshot();
    for (const s of [
      { kind: 2, pid: theirs.pid, start: theirs.addr, length: PAGE },
      { kind: 1, pid: theirs.pid },
      { kind: 1, pid: theirs.pid, wantsYoung: true },
      { kind: 2, process: 'theirs', start: theirs.addr, length: PAGE },
      { kind: 1, process: 'theirs' },
      // Not there: the same answer (no probing of which processes exist).
      { kind: 1, pid: 99_999 },
      { kind: 1, process: 'nobody' },
      { kind: 0, pid: theirs.pid },
    ]) {
      await forbidden(c, { subscribe: s });
    }
    expect(snapshot()).toBe(before);
    // The grant works: by name, by pid, and a named process by its pid.
    for (const s of [{ kind: 1, pid: minebypid.pid }, { kind: 1, pid: mine.pid }, { kind: 1, process: 'minebypid' }]) {
      expect((await c.request({ subscribe: s })).body).toBe('subscribed');
    }
    c.terminate();
  },
  async unsubscribe() {
    const { c } = await alpha();
    const before = snapshot();
    await forbidden(c, { unsubscribe: { subscriptionId: bInterval } });
    await forbidden(c, { unsubscribe: { subscriptionId: bMm } });
    expect(snapshot()).toBe(before);
    c.terminate();
  },
  async invalidateAck() {
    // b holds an invalidation of `theirs` open; alpha acknowledges it in b's place.
    const { c } = await alpha();
    hold.acks = true;
    const from = b.frames.length;
    const munmap = h.svc.kernel.munmap(theirs.pid, theirs.addr + 14 * PAGE, PAGE);
    const starts: Array<Extract<ServerFrame, { body: 'invalidateStart' }>> = [await bHeld('invalidateStart', from), await bHeld('invalidateStart', from)];
    for (const s of starts) c.send({ invalidateAck: { invalidationId: s.invalidateStart.invalidationId, subscriptionId: s.invalidateStart.subscriptionId } });
    expect((await closeCode(c))).toBe(CLOSE.PROTOCOL);
    expect(h.svc.channel.list().find((d) => d.id === bClientId)!.pendingAcks).toBe(2);
    expect(await settled(munmap)).toBe(false);
    hold.acks = false;
    for (const s of starts) b.send({ invalidateAck: { invalidationId: s.invalidateStart.invalidationId, subscriptionId: s.invalidateStart.subscriptionId } });
    await munmap;
  },
  async youngReply() {
    // b holds a young query of `theirs` (reclaim ages its pages); alpha answers it in b's place.
    const { c } = await alpha();
    hold.young = true;
    const from = b.frames.length;
    const reclaim = h.svc.kernel.reclaim(64);
    const q = await bHeld('youngQuery', from);
    expect(q.youngQuery.pid).toBe(theirs.pid);
    c.send({ youngReply: { queryId: q.youngQuery.queryId, young: true } });
    expect((await closeCode(c))).toBe(CLOSE.PROTOCOL);
    expect(await settled(reclaim)).toBe(false);
    hold.young = false;
    b.send({ youngReply: { queryId: q.youngQuery.queryId, young: false } });
    await reclaim;
  },
  async readBegin() {
    const { c } = await alpha();
    await forbidden(c, { readBegin: { subscriptionId: bInterval } });
    await forbidden(c, { readBegin: { subscriptionId: bMm } });
    c.terminate();
  },
  async rangeFault() {
    const { c } = await alpha();
    const before = snapshot();
    await forbidden(c, { rangeFault: { subscriptionId: bInterval, notifierSeq: 0, start: theirs.addr, end: theirs.addr + PAGE, defaultFlags: HMM_PFN.REQ_FAULT | HMM_PFN.REQ_WRITE } });
    expect(snapshot()).toBe(before);
    c.terminate();
  },
  async dma() {
    const { c } = await alpha();
    const k = h.svc.kernel;
    const before = snapshot();
    const bytes = (): string => Buffer.from(k.mem.data.subarray(theirsPfn() * PAGE, theirsPfn() * PAGE + 64)).toString('hex');
    const data = bytes();
    await forbidden(c, { dma: { pid: theirs.pid, addr: theirs.addr, pfn: theirsPfn(), write: true, data: new Uint8Array(8).fill(0xee) } });
    await forbidden(c, { dma: { pid: theirs.pid, addr: theirs.addr, pfn: theirsPfn(), length: 64 } });
    // Through its own process, at a frame of `theirs` it was never granted: a finding, not performed.
    const w = await c.request({ dma: { pid: mine.pid, addr: mine.addr, pfn: theirsPfn(), write: true, data: new Uint8Array(8).fill(0xee) } });
    expect(w.body === 'dmaReply' && w.dmaReply.finding).toBeTruthy();
    const r = await c.request({ dma: { pid: mine.pid, addr: mine.addr, pfn: theirsPfn(), length: 64 } });
    expect(r.body === 'dmaReply' && r.dmaReply.finding).toBeTruthy();
    expect(r.body === 'dmaReply' && r.dmaReply.data.length).toBe(0);
    expect(bytes()).toBe(data);
    expect(snapshot()).toBe(before);
    c.terminate();
  },
  async stats() {
    // Names no process: it sets this client's own figures, never another's.
    const { c } = await alpha();
    const bDev = h.svc.channel.list().find((d) => d.id === bClientId)!;
    const bCounters = JSON.stringify(bDev.counters);
    c.send({ stats: { counters: { injected: 42 }, mappedPages: 7 } });
    const mineDev = h.svc.channel.list().at(-1)!;
    await eventually(() => expect(mineDev.counters.injected).toBe(42));
    expect(JSON.stringify(bDev.counters)).toBe(bCounters);
    c.terminate();
  },
  async commandReply() {
    // The control plane sends b a command; alpha answers it in b's place.
    const { c } = await alpha();
    hold.commands = true;
    const bDev = h.svc.channel.list().find((d) => d.id === bClientId)!;
    const from = b.frames.length;
    const reply = bDev.command('snapshot', {}, 60_000);
    const cmd = await bHeld('command', from);
    c.send({ requestId: cmd.requestId, commandReply: { ok: true, valueJson: '"from alpha"' } });
    expect((await closeCode(c))).toBe(CLOSE.PROTOCOL);
    expect(await settled(reply)).toBe(false);
    hold.commands = false;
    b.send({ requestId: cmd.requestId, commandReply: { ok: true, valueJson: '"from b"' } });
    expect(await reply).toBe('from b');
  },
  async gup() {
    const { c } = await alpha();
    const before = snapshot();
    await forbidden(c, { gup: { pid: theirs.pid, addr: theirs.addr, write: true } });
    await forbidden(c, { gup: { pid: 99_999, addr: theirs.addr } });
    expect(snapshot()).toBe(before);
    expect((await c.request({ gup: { pid: mine.pid, addr: mine.addr } })).body).toBe('gupReply');
    c.terminate();
  },
  async vma() {
    const { c } = await alpha();
    await forbidden(c, { vma: { pid: theirs.pid, addr: theirs.addr } });
    await forbidden(c, { vma: { pid: 99_999, addr: theirs.addr } });
    const own = await c.request({ vma: { pid: mine.pid, addr: mine.addr } });
    expect(own.body === 'vmaReply' && own.vmaReply.found).toBe(true);
    c.terminate();
  },
  async migrate() {
    const { c } = await alpha();
    const before = snapshot();
    await forbidden(c, { migrate: { pid: theirs.pid, direction: MigrateDirection.TO_DEVICE, start: theirs.addr, end: theirs.addr + 4 * PAGE } });
    // Moving b's device page of `theirs` back to RAM is not alpha's to do either.
    await forbidden(c, { migrate: { pid: theirs.pid, direction: MigrateDirection.TO_SYSTEM, start: theirs.addr + 15 * PAGE, end: theirs.addr + 16 * PAGE } });
    expect(snapshot()).toBe(before);
    c.terminate();
  },
  async exclusive() {
    const { c } = await alpha();
    const before = snapshot();
    await forbidden(c, { exclusive: { pid: theirs.pid, addr: theirs.addr } });
    expect(snapshot()).toBe(before);
    c.terminate();
  },
  async evictDeviceMemory() {
    // Names no process: it evicts this client's device memory only, never b's page in `theirs`.
    const { c } = await alpha();
    const r = await c.request({ evictDeviceMemory: {} });
    expect(r.body === 'evictDeviceMemoryReply' && r.evictDeviceMemoryReply.pages).toBe(0);
    expect(h.svc.kernel.pagemap(theirs.pid, theirs.addr + 15 * PAGE, 1)[0].devicePrivate).toBe(bClientId);
    c.terminate();
  },
};

describe('(c) a token that grants other processes only', () => {
  for (const kind of kinds) {
    it(kind, async () => {
      const fn = RESTRICTED[kind];
      expect(fn, `no case for ${kind}`).toBeDefined();
      await fn();
      expect(h.svc.kernel.audit().problems).toEqual([]);
      // b still works after each attempt.
      expect(b.open).toBe(true);
      expect((await b.request({ readBegin: { subscriptionId: bInterval } })).body).toBe('readBeginReply');
    });
  }

  it('never receives an event of a process outside its grant', async () => {
    const { c } = await alpha();
    const k = h.svc.kernel;
    const from = c.frames.length;
    // Everything that makes `theirs` notify its subscribers, b included.
    await k.munmap(theirs.pid, theirs.addr + 13 * PAGE, PAGE);
    await k.mprotect(theirs.pid, theirs.addr, 2 * PAGE, PROT.READ);
    await k.madvise(theirs.pid, theirs.addr + 2 * PAGE, PAGE, 'dontneed');
    await k.clearRefs(theirs.pid, 'soft-dirty');
    await k.reclaim(64);
    // And the same on alpha's own process: these must arrive (the client is listening).
    await k.munmap(mine.pid, mine.addr + 13 * PAGE, PAGE);
    await k.reclaim(64);
    await eventually(() => expect(c.frames.slice(from).some((f) => f.body === 'invalidateEnd')).toBe(true));
    const events = c.frames.slice(from).filter((f) => ['invalidateStart', 'invalidateEnd', 'release', 'youngQuery'].includes(f.body));
    const pids = new Set(events.map((f) => (f as unknown as Record<string, { pid: number }>)[f.body].pid));
    expect([...pids]).toEqual([mine.pid]);
    // b did get the events of `theirs`.
    expect(b.frames.some((f) => f.body === 'invalidateStart' && f.invalidateStart.pid === theirs.pid && f.invalidateStart.event === 2)).toBe(true);
    // A process exit releases its subscribers: b hears of it, alpha does not.
    const gone = await newProc('theirs-exiting');
    const bs = await b.request({ subscribe: { kind: 1, pid: gone.pid } });
    expect(bs.body).toBe('subscribed');
    await k.exit(gone.pid);
    expect(b.frames.some((f) => f.body === 'release' && f.release.pid === gone.pid)).toBe(true);
    expect(c.frames.some((f) => f.body === 'release')).toBe(false);
    c.terminate();
    expect(k.audit().problems).toEqual([]);
  });
});
