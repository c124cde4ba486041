/**
 * Fuzzing the notifier channel (issue #8), property-based with fast-check, over the real WebSocket
 * endpoint /v1/notifier/ws of a service on an ephemeral port.
 *
 * Inputs: random byte frames; structurally valid ClientFrames of every message kind with random
 * field values (0, 2^53 and above, ULONG_MAX, random ranges) before and after Hello, with valid and
 * invalid tokens; sequences of them mixed with kernel activity (invalidations the fuzzed client
 * must acknowledge) and control-plane commands the fuzzed client answers. Generated frames refer
 * to what the server handed out (subscription ids, seqs, pfns, invalidation and command ids)
 * symbolically, so that sequences reach range faults, DMA, acknowledgements and command replies.
 *
 * After every run: the server sent only decodable frames, every Error frame carries a catalogue
 * code, the connection stayed open or was closed with a documented close code (docs/channel.md),
 * every command and invalidation the run started has settled, a long-lived well-behaved client
 * still acknowledges, and the kernel's frame accounting audit is clean. After every property a new
 * well-behaved client connects, subscribes and acknowledges an invalidation.
 *
 * fast-check chooses the seed; a failure prints the seed, the path and the shrunk counterexample.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { PROT } from '../../src/kernel/kernel.js';
import { decodeClientFrame, decodeServerFrame, encodeClientFrame, type ClientFrameIn, type ServerFrame } from '../../src/channel/codec.js';
import { CLOSE } from '../../src/channel/close-codes.js';
import { ERROR_CODES, ERRORS, type ErrorCode } from '../../src/errors.js';
import { DeviceClient } from '../../src/client/device-client.js';
import { startHarness, type Harness } from './helpers.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const AREA_PAGES = 16;
const MAX_PAYLOAD = 64 * 1024;
const RUNS = Number(process.env.FUZZ_RUNS ?? 30);
/** Close codes a server may use (src/channel/close-codes.ts, docs/channel.md). */
const DOCUMENTED_CLOSE = new Set<number>(Object.values(CLOSE));

let h: Harness;
let pid = 0;
let addr = 0;
let healthy: DeviceClient;
let healthyAcks = 0;
let healthySub = 0;

beforeAll(async () => {
  h = await startHarness({ channel: { maxPayload: MAX_PAYLOAD }, deadlineMs: 1000 });
  const k = h.svc.kernel;
  const p = k.createProcess('victim');
  pid = p.pid;
  addr = await k.mmap(p.pid, { length: AREA_PAGES * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, addr, new Uint8Array(AREA_PAGES * PAGE).fill(3));
  healthy = h.client({ name: 'healthy' });
  healthy.onInvalidateStart(() => {
    healthyAcks++;
    return true;
  });
  await healthy.connect();
  healthySub = (await healthy.subscribeInterval({ pid, start: addr, length: AREA_PAGES * PAGE })).subscriptionId;
}, 60_000);
afterAll(async () => {
  await h?.close();
});

// ---- the message kinds of a ClientFrame -------------------------------------------------------------

/** The members of ClientFrame's `body` oneof, read from the .proto (camelCase, as the codec names them). */
function protoClientKinds(): string[] {
  const proto = readFileSync(new URL('../../proto/devmirror/v1/notifier.proto', import.meta.url), 'utf8');
  const m = /message ClientFrame \{[\s\S]*?oneof body \{([\s\S]*?)\}/.exec(proto);
  if (!m) throw new Error('no ClientFrame oneof in the .proto');
  return [...m[1].matchAll(/^\s*\w+\s+(\w+)\s*=\s*\d+;/gm)].map((x) => x[1].replace(/_(\w)/g, (_s, c: string) => c.toUpperCase()));
}

// ---- symbolic references to what the server handed out ----------------------------------------------

type RefName = 'pid' | 'addr' | 'sub' | 'seq' | 'pfn' | 'inv' | 'invSub' | 'young' | 'cmd';
interface Ref {
  $ref: RefName;
  off: number;
}
const ref = (name: RefName, off = 0): Ref => ({ $ref: name, off });
const isRef = (v: unknown): v is Ref => typeof v === 'object' && v !== null && typeof (v as Ref).$ref === 'string' && !(v instanceof Uint8Array);

/** What one connection saw from the server. */
interface Seen {
  frames: ServerFrame[];
  subs: number[];
  seq: number;
  pfns: number[];
  invs: Array<{ inv: number; sub: number }>;
  young: number[];
  cmds: number[];
  clientId: number;
}

function resolveRef(r: Ref, s: Seen): unknown {
  const last = <T>(a: T[], d: T): T => (a.length ? a[a.length - 1 - (Math.abs(r.off) % a.length)] : d);
  switch (r.$ref) {
    case 'pid':
      return pid;
    case 'addr':
      return addr + r.off;
    case 'sub':
      return last(s.subs, healthySub);
    case 'seq':
      return s.seq;
    case 'pfn':
      return last(s.pfns, 0);
    case 'inv':
      return last(s.invs, { inv: 1, sub: 1 }).inv;
    case 'invSub':
      return last(s.invs, { inv: 1, sub: 1 }).sub;
    case 'young':
      return last(s.young, 1);
    case 'cmd':
      return last(s.cmds, 1);
  }
}

function resolve(v: unknown, s: Seen): unknown {
  if (isRef(v)) return resolveRef(v, s);
  if (v instanceof Uint8Array || typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) return v.map((x) => resolve(x, s));
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolve(x, s)]));
}

// ---- value generators -----------------------------------------------------------------------------------

const ULONG_MAX = 2n ** 64n - 1n;
/** uint64 values: 0, small, page multiples, 2^32, up to and above 2^53 (as bigint), ULONG_MAX. */
const u64 = fc.oneof(
  fc.constantFrom<number | bigint>(0, 1, PAGE, 2 ** 32, 2 ** 47, 2 ** 53 - 1, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, ULONG_MAX, ULONG_MAX - 4095n),
  fc.nat(),
  fc.bigInt({ min: 2n ** 53n, max: ULONG_MAX }),
);
const u32 = fc.oneof(fc.constantFrom(0, 1, 2 ** 31, 2 ** 32 - 1), fc.nat({ max: 2 ** 32 - 1 }));
const pageOff = fc.integer({ min: -2, max: AREA_PAGES + 2 }).map((n) => n * PAGE);
const addrV = fc.oneof(
  { arbitrary: pageOff.map((o) => ref('addr', o)), weight: 5 },
  { arbitrary: fc.tuple(pageOff, fc.integer({ min: 1, max: PAGE - 1 })).map(([o, u]) => ref('addr', o + u)), weight: 1 },
  { arbitrary: u64, weight: 2 },
);
const pidV = fc.oneof({ arbitrary: fc.constant(ref('pid')), weight: 5 }, { arbitrary: u32, weight: 1 });
const subV = fc.oneof({ arbitrary: fc.integer({ min: 0, max: 3 }).map((o) => ref('sub', o)), weight: 5 }, { arbitrary: u64, weight: 1 });
const idV = (name: RefName) => fc.oneof({ arbitrary: fc.integer({ min: 0, max: 2 }).map((o) => ref(name, o)), weight: 4 }, { arbitrary: u64, weight: 1 });
const enumV = (...valid: number[]) => fc.oneof({ arbitrary: fc.constantFrom(...valid), weight: 5 }, { arbitrary: fc.integer({ min: -3, max: 1000 }), weight: 1 });
const str = fc.oneof({ arbitrary: fc.string({ maxLength: 40 }), weight: 5 }, { arbitrary: fc.integer({ min: 100, max: 20_000 }).map((n) => 'x'.repeat(n)), weight: 1 });
const lengthV = fc.oneof({ arbitrary: fc.integer({ min: 0, max: AREA_PAGES + 2 }).map((n) => n * PAGE), weight: 4 }, { arbitrary: u64, weight: 1 });
const tokenV = fc.oneof(
  { arbitrary: fc.constant('devmirror-local'), weight: 6 },
  { arbitrary: fc.constantFrom('', 'wrong-token', 'worker:1:00000000000000000000000000000000', 'worker:x', ' devmirror-local'), weight: 1 },
  { arbitrary: fc.string({ maxLength: 20 }), weight: 1 },
);
const helloV = fc.record(
  {
    protocolVersions: fc.oneof({ arbitrary: fc.constant([1]), weight: 6 }, { arbitrary: fc.array(u32, { maxLength: 4 }), weight: 1 }),
    token: tokenV,
    clientName: str,
    deviceKind: fc.oneof(fc.constantFrom('dmirror', 'gpu', ''), fc.string({ maxLength: 40 })),
    capabilities: fc.array(fc.oneof(fc.constantFrom('young', 'dma', 'commands', 'migrate', 'exclusive'), fc.string({ maxLength: 10 })), { maxLength: 6 }),
  },
  { requiredKeys: ['protocolVersions', 'token'] },
);

/** A ClientFrame body of every kind, with random (and often plausible) fields. */
const BODIES: Record<string, fc.Arbitrary<Record<string, unknown>>> = {
  hello: helloV,
  subscribe: fc.record(
    { kind: enumV(1, 2), pid: pidV, process: fc.oneof(fc.constantFrom('victim', ''), fc.string({ maxLength: 20 })), start: addrV, length: lengthV, wantsYoung: fc.boolean(), label: str },
    { requiredKeys: ['kind'] },
  ),
  unsubscribe: fc.record({ subscriptionId: subV }),
  invalidateAck: fc.record({ invalidationId: idV('inv'), subscriptionId: fc.oneof(idV('invSub'), subV), result: enumV(0, 1) }, { requiredKeys: [] }),
  youngReply: fc.record({ queryId: idV('young'), young: fc.boolean() }, { requiredKeys: [] }),
  readBegin: fc.record({ subscriptionId: subV }, { requiredKeys: [] }),
  rangeFault: fc.record(
    {
      subscriptionId: subV,
      notifierSeq: fc.oneof({ arbitrary: fc.constant(ref('seq')), weight: 4 }, { arbitrary: u64, weight: 1 }),
      start: addrV,
      end: addrV,
      defaultFlags: fc.oneof(fc.constantFrom(0, 0x80000000, 0xc0000000), u32),
      pfnFlagsMask: u32,
      input: fc.array(u32, { maxLength: AREA_PAGES + 2 }),
      ownerSelf: fc.boolean(),
    },
    { requiredKeys: ['start', 'end'] },
  ),
  dma: fc.record(
    {
      pid: pidV,
      // Mostly inside the pages the plausible prefix faulted in, not crossing a page.
      addr: fc.oneof({ arbitrary: fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: PAGE - 257 })).map(([p, o]) => ref('addr', p * PAGE + o)), weight: 3 }, { arbitrary: addrV, weight: 1 }),
      pfn: fc.oneof({ arbitrary: fc.integer({ min: 0, max: 4 }).map((o) => ref('pfn', o)), weight: 4 }, { arbitrary: u32, weight: 1 }),
      write: fc.boolean(),
      length: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 256 }), weight: 4 }, { arbitrary: fc.integer({ min: 0, max: PAGE + 1 }), weight: 1 }, { arbitrary: u32, weight: 1 }),
      data: fc.oneof({ arbitrary: fc.uint8Array({ minLength: 1, maxLength: 256 }), weight: 4 }, { arbitrary: fc.uint8Array({ maxLength: PAGE + 64 }), weight: 1 }),
    },
    { requiredKeys: ['pid', 'addr', 'pfn'] },
  ),
  stats: fc.record(
    { counters: fc.dictionary(fc.string({ maxLength: 16 }), u64, { maxKeys: 5 }), mappedPages: u64, writablePages: u64, objects: u64 },
    { requiredKeys: [] },
  ),
  commandReply: fc.record(
    {
      ok: fc.boolean(),
      valueJson: fc.oneof(
        fc.constantFrom('', 'null', '{"cpages":1,"faults":0}', '{"cpages":"x"}', '[]', '{', 'nul', '{"$bytes":"AAAA"}', '{"$bytes":"***"}', '1e999'),
        fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null'),
        fc.string({ maxLength: 20 }),
      ),
      errorCode: fc.oneof(fc.constantFrom(...ERROR_CODES), fc.constantFrom('', 'toString', '__proto__', 'constructor', 'DM_ERR_NOPE', 'hasOwnProperty'), fc.string({ maxLength: 12 })),
      errorMessage: str,
    },
    { requiredKeys: [] },
  ),
  gup: fc.record({ pid: pidV, addr: addrV, write: fc.boolean() }, { requiredKeys: [] }),
  vma: fc.record({ pid: pidV, addr: addrV }, { requiredKeys: [] }),
  migrate: fc.record({ pid: pidV, direction: enumV(1, 2), start: addrV, end: addrV, allocFails: fc.boolean() }, { requiredKeys: [] }),
  exclusive: fc.record({ pid: pidV, addr: addrV }, { requiredKeys: [] }),
  evictDeviceMemory: fc.constant({}),
};
const KINDS = Object.keys(BODIES);

const requestIdV = fc.oneof({ arbitrary: fc.nat({ max: 1000 }), weight: 6 }, { arbitrary: u64, weight: 1 });
/** One structured frame of the given kinds. */
const frameOf = (kinds: string[]) =>
  fc.constantFrom(...kinds).chain((kind) =>
    fc.tuple(kind === 'commandReply' ? fc.oneof({ arbitrary: idV('cmd'), weight: 4 }, { arbitrary: requestIdV, weight: 1 }) : requestIdV, BODIES[kind]).map(([requestId, body]) => ({ requestId, [kind]: body }) as Record<string, unknown>),
  );

type Step =
  | { frame: Record<string, unknown> }
  | { bytes: Uint8Array }
  | { text: string }
  /** The kernel invalidates a page of the area (the client must acknowledge, or be evicted). */
  | { invalidate: number }
  /** The control plane sends the client a dmirror command (HTTP, through the channel). */
  | { command: 'read' | 'snapshot' | 'write'; page: number }
  | { wait: number }
  /** Acknowledges the invalidations received and not yet acknowledged (OK, or WOULD_BLOCK). */
  | { ack: number };

/** Frame kinds in sequences: the ones that touch the kernel and the acknowledgements more often. */
const SEQUENCE_WEIGHTS: Record<string, number> = { dma: 6, invalidateAck: 1, rangeFault: 3, readBegin: 2, gup: 2, exclusive: 2, migrate: 2, subscribe: 2, unsubscribe: 1 };
const sequenceFrame = fc.oneof(
  ...KINDS.filter((k) => k !== 'hello').map((k) => ({ arbitrary: frameOf([k]).map((frame) => ({ frame })), weight: SEQUENCE_WEIGHTS[k] ?? 1 })),
);
const stepV: fc.Arbitrary<Step> = fc.oneof(
  { arbitrary: sequenceFrame, weight: 12 },
  { arbitrary: frameOf(['hello']).map((frame) => ({ frame })), weight: 1 },
  { arbitrary: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => ({ bytes })), weight: 1 },
  { arbitrary: fc.string({ maxLength: 10 }).map((text) => ({ text })), weight: 1 },
  { arbitrary: fc.integer({ min: 0, max: AREA_PAGES - 1 }).map((invalidate) => ({ invalidate })), weight: 3 },
  { arbitrary: fc.record({ command: fc.constantFrom<'read' | 'snapshot' | 'write'>('read', 'snapshot', 'write'), page: fc.integer({ min: 0, max: AREA_PAGES - 1 }) }), weight: 3 },
  { arbitrary: fc.integer({ min: 1, max: 30 }).map((wait) => ({ wait })), weight: 1 },
  { arbitrary: fc.oneof({ arbitrary: fc.constant(0), weight: 5 }, { arbitrary: fc.constant(1), weight: 1 }).map((ack) => ({ ack })), weight: 4 },
);

// ---- one connection -----------------------------------------------------------------------------------

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const debugLog: string[] = [];

interface RunResult {
  seen: Seen;
  welcomed: boolean;
  /** Close code, and whether the server closed first. */
  closeCode: number;
  serverClosed: boolean;
  /** HTTP replies of the commands, and the results of the invalidations, of this run. */
  commands: Array<{ status: number; body: string }>;
  /** Frames the client sent, as bytes (for the oracle). */
  sent: Array<{ bytes?: Uint8Array; text?: string }>;
  /** Server frames that did not decode as a ServerFrame. */
  undecodable: string[];
}

/** Opens a connection (token in the upgrade or not), sends Hello unless `hello` is null, then the steps. */
async function run(hello: Record<string, unknown> | null, headerToken: string | null, steps: Step[]): Promise<RunResult> {
  const k = h.svc.kernel;
  const ws = new WebSocket(h.url, { headers: headerToken !== null ? { authorization: `Bearer ${headerToken}` } : undefined, perMessageDeflate: false });
  const seen: Seen = { frames: [], subs: [], seq: 0, pfns: [], invs: [], young: [], cmds: [], clientId: 0 };
  const res: RunResult = { seen, welcomed: false, closeCode: -1, serverClosed: false, commands: [], sent: [], undecodable: [] };
  let closedByUs = false;
  const closed = new Promise<number>((r) => ws.once('close', (c) => r(c)));
  ws.on('error', () => undefined);
  ws.on('message', (data: Buffer) => {
    let f: ServerFrame;
    try {
      f = decodeServerFrame(data);
    } catch (e) {
      res.undecodable.push((e as Error).message);
      return;
    }
    seen.frames.push(f);
    if (process.env.FUZZ_DEBUG) debugLog.push(`recv ${show(f)}`);
    switch (f.body) {
      case 'welcome':
        res.welcomed = true;
        seen.clientId = f.welcome.clientId;
        break;
      case 'subscribed':
        if (typeof f.subscribed.subscriptionId === 'number') seen.subs.push(f.subscribed.subscriptionId);
        break;
      case 'readBeginReply':
        seen.seq = Number(f.readBeginReply.seq);
        break;
      case 'rangeFaultReply':
        for (const w of f.rangeFaultReply.pfns) if (w & 0x80000000) seen.pfns.push(w & 0xffffff);
        break;
      case 'invalidateStart':
        seen.invs.push({ inv: Number(f.invalidateStart.invalidationId), sub: Number(f.invalidateStart.subscriptionId) });
        break;
      case 'release':
        seen.invs.push({ inv: Number(f.release.invalidationId), sub: Number(f.release.subscriptionId) });
        break;
      case 'youngQuery':
        seen.young.push(Number(f.youngQuery.queryId));
        break;
      case 'command':
        seen.cmds.push(Number(f.requestId));
        break;
    }
  });
  const opened = await new Promise<boolean>((r) => {
    ws.once('open', () => r(true));
    ws.once('unexpected-response', () => r(false));
    ws.once('close', () => r(false));
  });
  const pending: Array<Promise<unknown>> = [];
  let acked = 0;
  if (opened) {
    const send = (data: Uint8Array | string): void => {
      if (ws.readyState !== WebSocket.OPEN) return;
      res.sent.push(typeof data === 'string' ? { text: data } : { bytes: data });
      ws.send(data);
    };
    if (hello) {
      send(encodeClientFrame(hello as ClientFrameIn));
      for (let i = 0; i < 100 && !res.welcomed && ws.readyState === WebSocket.OPEN; i++) await sleep(5);
    }
    for (const step of steps) {
      if (ws.readyState !== WebSocket.OPEN) break;
      if ('frame' in step) {
        let bytes: Uint8Array;
        try {
          bytes = encodeClientFrame(resolve(step.frame, seen) as ClientFrameIn);
        } catch {
          continue; // not encodable (a value the codec refuses on the way out): nothing to send
        }
        send(bytes);
        if (process.env.FUZZ_DEBUG) debugLog.push(`send ${show(resolve(step.frame, seen))}`);
      } else if ('bytes' in step) send(step.bytes);
      else if ('text' in step) send(step.text);
      else if ('invalidate' in step) pending.push(k.madvise(pid, addr + step.invalidate * PAGE, PAGE, 'dontneed').catch(() => undefined));
      else if ('command' in step) {
        const payload = { addr: addr + step.page * PAGE, npages: 1, ...(step.command === 'write' ? { data: Buffer.alloc(PAGE, 9).toString('base64') } : {}) };
        pending.push(
          h.app.inject({ method: 'POST', url: `/v1/devices/${seen.clientId}/dmirror/${step.command}`, payload }).then((r) => {
            res.commands.push({ status: r.statusCode, body: r.body });
          }),
        );
      } else if ('ack' in step) {
        for (const i of seen.invs.slice(acked)) send(encodeClientFrame({ invalidateAck: { invalidationId: i.inv, subscriptionId: i.sub, result: step.ack } }));
        acked = seen.invs.length;
      } else await sleep(step.wait);
      await sleep(2);
    }
    // Let the last replies arrive, then leave (unless the server closed already).
    for (let i = 0; i < 10 && ws.readyState === WebSocket.OPEN; i++) await sleep(5);
  }
  if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
    closedByUs = true;
    ws.close(1000, 'done');
  }
  const t = setTimeout(() => ws.terminate(), 3000);
  res.closeCode = await closed;
  clearTimeout(t);
  res.serverClosed = !closedByUs;
  // Whatever the run started must settle now that the client is gone: invalidations complete (its
  // acknowledgements count as given), commands are answered or refused.
  const settled = await Promise.race([Promise.all(pending).then(() => true), sleep(10_000).then(() => false)]);
  expect(settled, 'an invalidation or a command of the run never settled after the client left').toBe(true);
  return res;
}

// ---- checks ------------------------------------------------------------------------------------------------

const show = (x: unknown) => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? `bytes(${v.length})` : v))?.slice(0, 600);

const STATS = new Map<string, number>();
const count = (k: string) => STATS.set(k, (STATS.get(k) ?? 0) + 1);
afterAll(() => {
  if (process.env.FUZZ_STATS) console.log([...STATS].sort().map(([k, n]) => `${n}\t${k}`).join('\n'));
});

/** What every run must satisfy. */
async function checkRun(r: RunResult, what: string): Promise<void> {
  if (process.env.FUZZ_STATS) {
    for (const f of r.seen.frames) count(`frame ${f.body}${f.body === 'error' ? ` ${f.error.code}` : ''}`);
    count(`close ${r.serverClosed ? 'server' : 'client'} ${r.closeCode}`);
    for (const c of r.commands) count(`command ${c.status} ${JSON.parse(c.body).code ?? ''}`);
  }
  expect(r.undecodable, `${what}: the server sent frames that do not decode`).toEqual([]);
  for (const f of r.seen.frames) {
    if (f.body === 'error') {
      expect(ERROR_CODES, `${what}: Error frame with an undocumented code ${f.error.code}`).toContain(f.error.code);
      expect(typeof f.error.message).toBe('string');
    }
  }
  if (r.serverClosed) expect(DOCUMENTED_CLOSE.has(r.closeCode), `${what}: closed with undocumented code ${r.closeCode}`).toBe(true);
  else expect([1000, 1005], `${what}: our close answered with ${r.closeCode}`).toContain(r.closeCode);
  for (const c of r.commands) {
    // A command the client refuses or mangles is the device's error (4xx, or DM_ERR_INTERNAL when
    // the device reports a failure without a catalogue code); never an undocumented one.
    let b: { code?: string; message?: unknown };
    try {
      b = JSON.parse(c.body);
    } catch {
      throw new Error(`${what}: a command reply that is not JSON: ${c.body.slice(0, 200)}`);
    }
    if (c.status >= 400) {
      expect(ERROR_CODES, `${what}: command answered ${c.status} with code ${b.code}`).toContain(b.code);
      expect(c.status, `${what}: ${b.code} with status ${c.status}`).toBe(ERRORS[b.code as ErrorCode].status);
      expect(b.message, `${what}: an unhandled exception in the control plane`).not.toBe('internal error (see the server log)');
    }
  }
  // The long-lived client still acknowledges, and the books balance.
  const k = h.svc.kernel;
  const before = healthyAcks;
  await k.madvise(pid, addr, PAGE, 'dontneed');
  // At least one: a page the fuzzed client left device-exclusive is restored first (one more round).
  expect(healthyAcks, `${what}: the healthy client did not acknowledge`).toBeGreaterThan(before);
  await auditClean(what);
  if (process.env.FUZZ_DEBUG) debugLog.push(`---- run end ${r.closeCode}`);
}

/**
 * The frame accounting audit is defined for a quiescent kernel: the server tears a closed
 * connection down asynchronously (its device memory is evicted back to RAM after the socket
 * closed), so the books are checked once that is done; a real leak stays.
 */
async function auditClean(what: string): Promise<void> {
  try {
    await eventually(() => expect(h.svc.kernel.audit().problems).toEqual([]), 3000);
  } catch {
    if (process.env.FUZZ_DEBUG) console.log(debugLog.slice(-200).join('\n'));
    expect(h.svc.kernel.audit().problems, `${what}: frame accounting audit`).toEqual([]);
  }
}

/** A new client connects, subscribes and acknowledges an invalidation. */
async function newClientWorks(): Promise<void> {
  const c = new DeviceClient({ url: h.url, token: 'devmirror-local', name: 'after-fuzz' });
  let acks = 0;
  c.onInvalidateStart(() => {
    acks++;
    return true;
  });
  try {
    await c.connect();
    const s = await c.subscribeInterval({ pid, start: addr, length: AREA_PAGES * PAGE });
    expect(s.subscriptionId).toBeGreaterThan(0);
    await h.svc.kernel.madvise(pid, addr + PAGE, PAGE, 'dontneed');
    expect(acks).toBe(1);
  } finally {
    await c.close();
  }
  await auditClean('a new client after the property');
}

// ---- the properties ---------------------------------------------------------------------------------------

describe('notifier channel fuzzing', () => {
  it('has a generator for every message kind of ClientFrame', () => {
    expect(KINDS.sort()).toEqual(protoClientKinds().sort());
    for (const kind of KINDS) expect(decodeClientFrame(encodeClientFrame({ [kind]: {} } as ClientFrameIn)).body).toBe(kind);
  });

  it('random bytes, before and after Hello: 1007 when they do not decode, a documented outcome otherwise', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(fc.uint8Array({ minLength: 0, maxLength: 200 }), { minLength: 1, maxLength: 3 }), async (withHello, frames) => {
        const r = await run(withHello ? { hello: { protocolVersions: [1], token: 'devmirror-local' } } : null, withHello ? null : 'devmirror-local', frames.map((bytes) => ({ bytes })));
        const what = `hello=${withHello} ${show(frames.map((f) => Buffer.from(f).toString('hex')))}`;
        await checkRun(r, what);
        // A first frame that does not decode as a ClientFrame closes the connection with 1007.
        let decodes = true;
        try {
          decodeClientFrame(frames[0]);
        } catch {
          decodes = false;
        }
        if (!decodes && (!withHello || r.welcomed)) expect(r.closeCode, what).toBe(CLOSE.INVALID_PAYLOAD);
      }),
      { numRuns: RUNS },
    );
    await newClientWorks();
  });

  it('one frame of any kind as the first frame, with or without a token at the upgrade', async () => {
    await fc.assert(
      fc.asyncProperty(frameOf(KINDS), fc.constantFrom<string | null>(null, 'devmirror-local'), async (frame, header) => {
        const r = await run(null, header, [{ frame }]);
        const what = `header=${header} ${show(frame)}`;
        await checkRun(r, what);
        const body = Object.keys(frame).find((k) => k !== 'requestId')!;
        if (body !== 'hello') {
          expect(r.closeCode, `${what}: a first frame that is not Hello`).toBe(CLOSE.PROTOCOL);
        } else {
          const hl = frame.hello as { protocolVersions: number[]; token: string };
          const token = hl.token || header || '';
          if (!hl.protocolVersions.includes(1)) expect(r.closeCode, what).toBe(CLOSE.VERSION);
          else if (token !== 'devmirror-local') expect(r.closeCode, what).toBe(CLOSE.UNAUTHORIZED);
          else expect(r.welcomed, `${what}: a valid Hello was not welcomed`).toBe(true);
        }
      }),
      { numRuns: RUNS },
    );
    await newClientWorks();
  });

  it('sequences of frames of every kind after Hello, with invalidations and commands: documented outcomes only', async () => {
    const hello = { requestId: 0, hello: { protocolVersions: [1], token: 'devmirror-local', deviceKind: 'dmirror', clientName: 'fuzz' } };
    // A plausible prefix (subscribe, read begin, fault) so that random continuations reach acks, DMA and replies.
    const prefix = fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, { arbitrary: fc.constant(false), weight: 1 }).map((yes): Step[] =>
      yes
        ? [
            { frame: { requestId: 1, subscribe: { kind: 2, pid: ref('pid'), start: ref('addr'), length: AREA_PAGES * PAGE, label: 'fuzz' } } },
            { frame: { requestId: 2, readBegin: { subscriptionId: ref('sub') } } },
            { frame: { requestId: 3, rangeFault: { subscriptionId: ref('sub'), notifierSeq: ref('seq'), start: ref('addr'), end: ref('addr', 4 * PAGE), defaultFlags: 0x80000000 } } },
          ]
        : [],
    );
    await fc.assert(
      fc.asyncProperty(prefix, fc.array(stepV, { minLength: 1, maxLength: 8 }), async (pre, steps) => {
        const r = await run(hello, null, [...pre, ...steps]);
        await checkRun(r, show([...pre, ...steps]));
        expect(r.welcomed).toBe(true);
      }),
      { numRuns: RUNS * 2 },
    );
    await newClientWorks();
  });

  it('control-plane commands answered with random CommandReplies: every command settles with a documented error or a value', async () => {
    const hello = { requestId: 0, hello: { protocolVersions: [1], token: 'devmirror-local', deviceKind: 'dmirror' } };
    const reply = fc.tuple(fc.oneof({ arbitrary: fc.constant(ref('cmd')), weight: 6 }, { arbitrary: requestIdV, weight: 1 }), BODIES.commandReply);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<'read' | 'snapshot' | 'write'>('read', 'snapshot', 'write'), fc.array(reply, { minLength: 1, maxLength: 3 }), async (command, replies) => {
        const steps: Step[] = [{ command, page: 0 }, { wait: 20 }, ...replies.map(([requestId, commandReply]) => ({ frame: { requestId, commandReply } }))];
        const r = await run(hello, null, steps);
        await checkRun(r, show(steps));
        expect(r.commands.length, 'the command got an HTTP answer').toBe(1);
      }),
      { numRuns: RUNS },
    );
    await newClientWorks();
  });

  it('every message kind after Hello with random fields: a reply, an Error frame, or a documented close', async () => {
    const hello = { requestId: 0, hello: { protocolVersions: [1], token: 'devmirror-local', deviceKind: 'dmirror' } };
    for (const kind of KINDS) {
      await fc.assert(
        fc.asyncProperty(frameOf([kind]), async (frame) => {
          const r = await run(hello, null, [{ frame }]);
          const what = show(frame);
          await checkRun(r, what);
          // A second Hello is a protocol error.
          if (kind === 'hello') expect(r.closeCode, what).toBe(CLOSE.PROTOCOL);
        }),
        { numRuns: 6 },
      );
    }
    await newClientWorks();
  });
});

// ---- upgrade requests ---------------------------------------------------------------------------------------

/** Uncaught exceptions while the upgrade properties run (one would end a real service). */
const uncaught: string[] = [];
const onUncaught = (e: Error): void => {
  uncaught.push(`${(e as NodeJS.ErrnoException).code ?? e.name}: ${e.message}`);
};

interface Upgrade {
  path: string;
  auth: string | null;
  key: string | null;
  version: string | null;
  /** What the client does after its request: reset the connection after n ms, close it, or send junk. */
  then: { reset: number } | { end: true } | { junk: Uint8Array };
}

/** Sends one raw upgrade request and behaves as told; resolves when the socket is gone. */
function rawUpgrade(u: Upgrade): Promise<void> {
  return new Promise<void>((resolve) => {
    const s = net.connect(h.port, '127.0.0.1', () => {
      const headers = [
        `GET ${u.path} HTTP/1.1`,
        'Host: 127.0.0.1',
        'Upgrade: websocket',
        'Connection: Upgrade',
        ...(u.key !== null ? [`Sec-WebSocket-Key: ${u.key}`] : []),
        ...(u.version !== null ? [`Sec-WebSocket-Version: ${u.version}`] : []),
        ...(u.auth !== null ? [`Authorization: ${u.auth}`] : []),
      ];
      s.write(`${headers.join('\r\n')}\r\n\r\n`);
      if ('reset' in u.then) setTimeout(() => s.resetAndDestroy(), u.then.reset);
      else if ('end' in u.then) {
        s.end();
        setTimeout(() => s.destroy(), 20);
      } else {
        s.write(u.then.junk);
        setTimeout(() => s.destroy(), 20);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => resolve());
    setTimeout(() => s.destroy(), 3000).unref();
  });
}

const upgradeV: fc.Arbitrary<Upgrade> = fc.record({
  path: fc.constantFrom('/v1/notifier/ws', '/v1/notifier/ws?token=wrong', '/v1/notifier/ws?token=devmirror-local', '/v1/notifier/wsx', '/other', '/v1/notifier/ws?token=worker:1:00000000000000000000000000000000'),
  auth: fc.constantFrom(null, 'Bearer wrong', 'Bearer devmirror-local', 'Bearer ', 'Basic eDp5', 'Bearer worker:99:00000000000000000000000000000000'),
  key: fc.constantFrom('dGhlIHNhbXBsZSBub25jZQ==', 'short', null),
  version: fc.constantFrom('13', '8', null),
  then: fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 5 }).map((reset) => ({ reset })), weight: 4 },
    { arbitrary: fc.constant({ end: true as const }), weight: 1 },
    { arbitrary: fc.uint8Array({ minLength: 1, maxLength: 64 }).map((junk) => ({ junk })), weight: 1 },
  ),
});

describe('notifier channel fuzzing: upgrade requests', () => {
  beforeAll(() => {
    process.on('uncaughtException', onUncaught);
  });
  afterAll(() => {
    process.off('uncaughtException', onUncaught);
  });

  it('raw upgrade requests (any path, token, key, version) that the client resets, ends or follows with junk: no uncaught exception', async () => {
    await fc.assert(
      fc.asyncProperty(upgradeV, async (u) => {
        await rawUpgrade(u);
        await sleep(5);
        expect(uncaught.splice(0), JSON.stringify(u, (_k, v) => (v instanceof Uint8Array ? `bytes(${v.length})` : v))).toEqual([]);
      }),
      { numRuns: RUNS * 2 },
    );
    await newClientWorks();
  });

  it('regression: a refused upgrade (unknown token, unknown path) whose client resets the connection does not raise an uncaught ECONNRESET (it ended the process)', async () => {
    for (let i = 0; i < 20; i++) {
      await rawUpgrade({ path: i % 2 ? '/v1/notifier/ws' : '/nowhere', auth: 'Bearer wrong', key: 'dGhlIHNhbXBsZSBub25jZQ==', version: '13', then: { reset: i % 3 } });
    }
    await sleep(50);
    expect(uncaught.splice(0)).toEqual([]);
    await newClientWorks();
  });
});

// ---- regressions: shrunk counterexamples the fuzzing found ------------------------------------------------

describe('notifier channel fuzzing: regressions', () => {
  const hello = { requestId: 0, hello: { protocolVersions: [1], token: 'devmirror-local', deviceKind: 'dmirror' } };
  const answer = (commandReply: Record<string, unknown>): Step[] => [{ command: 'read', page: 0 }, { wait: 30 }, { frame: { requestId: ref('cmd'), commandReply } }, { wait: 30 }];

  it('a CommandReply refusing with a code outside the catalogue settles the command: 500 DM_ERR_INTERNAL naming it (was: the control-plane request waited forever)', async () => {
    const r = await run(hello, null, answer({ ok: false, errorCode: ' ', errorMessage: 'nope' }));
    await checkRun(r, 'errorCode " "');
    expect(r.commands.map((c) => [c.status, JSON.parse(c.body).code])).toEqual([[500, 'DM_ERR_INTERNAL']]);
    expect(JSON.parse(r.commands[0].body).message).toContain('" "');
  }, 30_000);

  it('a CommandReply whose value_json is not JSON settles the command with 400 DM_ERR_CHANNEL_PROTOCOL and closes with 4000 (was: waited forever)', async () => {
    const r = await run(hello, null, answer({ ok: true, valueJson: '{' }));
    await checkRun(r, 'value_json "{"');
    expect(r.commands.map((c) => [c.status, JSON.parse(c.body).code])).toEqual([[400, 'DM_ERR_CHANNEL_PROTOCOL']]);
    expect(r.closeCode).toBe(CLOSE.PROTOCOL);
  }, 30_000);

  it('a Migrate over a range that is not whole pages is DM_ERR_VALIDATION, and nothing moves (was: the page cut into moved too, outside the announced MIGRATE range)', async () => {
    const k = h.svc.kernel;
    // Page 0 is the healthy client's check (checkRun drops it): compare the others.
    const mapped = () => JSON.stringify(k.pagemap(pid, addr + PAGE, AREA_PAGES - 1).map((e) => [e.pfn, e.devicePrivate]));
    const before = mapped();
    const sub: Step = { frame: { requestId: 1, subscribe: { kind: 2, pid: ref('pid'), start: ref('addr'), length: AREA_PAGES * PAGE } } };
    for (const [s0, e0] of [[0, PAGE + 1], [1, PAGE], [0, 1], [PAGE, PAGE]]) {
      const r = await run(hello, null, [sub, { wait: 20 }, { frame: { requestId: 9, migrate: { pid: ref('pid'), direction: 1, start: ref('addr', s0), end: ref('addr', e0) } } }, { wait: 30 }]);
      await checkRun(r, `migrate [${s0}, ${e0})`);
      const replies = r.seen.frames.filter((f) => Number(f.requestId) === 9);
      expect(replies.map((f) => (f.body === 'error' ? f.error.code : f.body)), `migrate [${s0}, ${e0})`).toEqual(['DM_ERR_VALIDATION']);
      expect(r.seen.frames.some((f) => f.body === 'invalidateStart' && f.invalidateStart.event === 6)).toBe(false);
    }
    expect(mapped()).toBe(before);
  }, 30_000);

  it('a CommandReply value of the wrong shape is 400 DM_ERR_CHANNEL_PROTOCOL (was: the reply serializer threw, 500 "internal error")', async () => {
    for (const valueJson of ['{"cpages":"x"}', '[]', '"text"']) {
      const r = await run(hello, null, answer({ ok: true, valueJson }));
      await checkRun(r, valueJson);
      expect(r.commands.map((c) => [c.status, JSON.parse(c.body).code]), valueJson).toEqual([[400, 'DM_ERR_CHANNEL_PROTOCOL']]);
    }
  }, 30_000);
});
