/**
 * Fuzzing the control plane (issue #8: "no input crashes the process or corrupts state; each gets
 * the documented error"), property-based with fast-check.
 *
 * Every route of the OpenAPI document gets generated requests: bodies (random JSON, wrong types,
 * huge, negative and unaligned numbers, NaN-ish strings, deep objects, very long strings, extra
 * properties, non-JSON text with a JSON content type, other content types), query strings and
 * path parameters (non-numeric, huge, negative, badly escaped). Generators are schema-aware and
 * mostly plausible (the real pid, page-aligned addresses inside the fixture's mapping, the real
 * device ids), so that requests reach the kernel and the devices and not only schema validation.
 *
 * After every request: no 5xx; every error is `{ code, message }` with a code of the catalogue
 * (src/errors.ts) and the catalogue's status (fastify's own 4xx refusals, such as 415 for a content
 * type other than JSON, keep their status under DM_ERR_VALIDATION, as docs/errors.md says); an
 * object with an unknown property or a body that is not JSON is refused with 400; a pagemap has
 * one entry per page asked for; no timer was set from a wild number (TimeoutOverflowWarning); the
 * service is healthy (GET /healthz) and the kernel's frame accounting audit (GET /v1/kernel/audit)
 * is clean. Requests that add processes, devices or daemon rates are undone after each run; the
 * fixture is rebuilt when a request destroyed it.
 *
 * Left out of the random runs: MAP_POPULATE of more than 64 MiB (it runs until memory or page
 * tables run out, seconds per request by design; a regression case below covers the huge case).
 *
 * fast-check chooses the seed; a failure prints the seed, the path and the shrunk request, which
 * `fc.assert(..., { seed, path })` replays. FUZZ_RUNS=n changes the runs per route (default 30).
 */
import http from 'node:http';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { ERRORS, ERROR_CODES, type ErrorCode } from '../../src/errors.js';
import { PROT } from '../../src/kernel/kernel.js';
import { ADVICES, MAX_PAGEMAP_PAGES } from '../../src/kernel/syscalls.js';
import { DEVICE_KINDS, EVENT_POLICIES } from '../../src/devices/protocol.js';
import { DAEMON_NAMES } from '../../src/kernel/activity/daemons.js';
import { ORIGINS } from '../../src/notifier/range.js';
import { DeviceClient } from '../../src/client/device-client.js';
import { eventually } from '../helpers/eventually.js';

const PAGE = 4096;
const AREA_PAGES = 64;
/** Runs per route: a few thousand requests in all. */
const RUNS = Number(process.env.FUZZ_RUNS ?? 30);

let svc: Service;
let app: FastifyInstance;
let port = 0;
let ext: DeviceClient;
/** The fixture: a process with a populated mapping, a dmirror worker device on it, an external
 * client (kind dmirror) subscribed to it, an in-memory file. Re-created when a request destroyed it. */
const fx = { pid: 0, addr: 0, dev: 0, ext: 0, file: 0, gonePid: 0 };

// ---- symbolic references, resolved when the request is sent ----------------------------------------

type RefName = 'pid' | 'victim' | 'gonePid' | 'addr' | 'dev' | 'ext' | 'file';
interface Ref {
  $ref: RefName;
  off: number;
}
const ref = (name: RefName, off = 0): Ref => ({ $ref: name, off });
const isRef = (v: unknown): v is Ref => typeof v === 'object' && v !== null && !Array.isArray(v) && typeof (v as Ref).$ref === 'string' && Object.keys(v).length === 2;

async function resolveRef(r: Ref): Promise<number> {
  switch (r.$ref) {
    case 'pid':
      return fx.pid;
    case 'gonePid':
      return fx.gonePid;
    case 'victim': {
      // A fresh process with a small populated mapping: for routes that destroy what they get.
      const k = svc.kernel;
      const p = k.createProcess();
      await k.mmap(p.pid, { length: 4 * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
      return p.pid;
    }
    case 'addr':
      return fx.addr + r.off;
    case 'dev':
      return fx.dev;
    case 'ext':
      return fx.ext;
    case 'file':
      return fx.file;
  }
}

async function resolve(v: unknown): Promise<unknown> {
  if (isRef(v)) return resolveRef(v);
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    for (const x of v) out.push(await resolve(x));
    return out;
  }
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) Object.defineProperty(out, k, { value: await resolve(x), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return v;
}

// ---- value generators ------------------------------------------------------------------------------

/** Deeply nested objects and arrays. */
const deep = fc.tuple(fc.integer({ min: 20, max: 3000 }), fc.boolean()).map(([d, arr]) => {
  let v: unknown = 1;
  for (let i = 0; i < d; i++) v = arr ? [v] : { a: v };
  return v;
});
const longString = fc.tuple(fc.constantFrom('x', '9', 'f', ' ', '\u00e9', '\u{1F600}', '\\', '"', '%'), fc.integer({ min: 300, max: 40_000 })).map(([c, n]) => c.repeat(n));
const nanish = fc.constantFrom('NaN', 'Infinity', '-Infinity', '1e309', '-1e309', '-0', '0x', '0x1g', '0X1000', '4096 ', ' 4096', '+4096', '4_096', '0b101', '0o7', '1.0', '1e3', '\u0664\u0660\u0669\u0666', '', ' ', 'null', 'undefined', 'true', '0x' + 'f'.repeat(40), '9'.repeat(400), '-4096', '4096.5', '\u0000', '%00', 'constructor', '__proto__');
const weirdNumbers = fc.constantFrom(-0, -1, -4096, 0.5, 1.5, 4095, 4097, 2 ** 31, 2 ** 32, 2 ** 47, 2 ** 47 - PAGE, 2 ** 48, Number.MAX_SAFE_INTEGER, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 2 ** 64, 2 ** 64 - PAGE, 1e300, Number.MAX_VALUE, Number.MIN_VALUE, -Number.MAX_VALUE, Number.MIN_SAFE_INTEGER);
/** Anything that is not what a field wants. */
const junk: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: nanish, weight: 3 },
  { arbitrary: weirdNumbers, weight: 3 },
  { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 3 },
  { arbitrary: fc.constantFrom(null, true, false, [], {}, [1, 2], { a: 1 }), weight: 2 },
  { arbitrary: fc.double(), weight: 1 },
  { arbitrary: fc.integer(), weight: 1 },
  { arbitrary: fc.string({ maxLength: 20 }), weight: 1 },
  { arbitrary: longString, weight: 1 },
  { arbitrary: deep, weight: 1 },
);
/** A plausible value most of the time, junk otherwise. */
const field = (plausible: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> => fc.oneof({ arbitrary: plausible, weight: 5 }, { arbitrary: junk, weight: 2 });

/**
 * A field's values: valid ones (by its schema; maybe wrong for the state, which is the point) and
 * invalid ones. Plausible bodies draw only from the valid side.
 */
const MIXED = new WeakMap<fc.Arbitrary<unknown>, fc.Arbitrary<unknown>>();
function mix<T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  const a = fc.oneof({ arbitrary: good as fc.Arbitrary<unknown>, weight: 4 }, { arbitrary: bad, weight: 1 });
  MIXED.set(a, good as fc.Arbitrary<unknown>);
  return a;
}
const validOnly = (a: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> => MIXED.get(a) ?? a;

const pageOff = fc.integer({ min: -4, max: AREA_PAGES + 4 }).map((n) => n * PAGE);
const addrP = fc.oneof(
  { arbitrary: pageOff.map((o) => ref('addr', o)), weight: 6 },
  { arbitrary: fc.tuple(pageOff, fc.integer({ min: 1, max: PAGE - 1 })).map(([o, u]) => ref('addr', o + u)), weight: 2 },
  { arbitrary: fc.constantFrom(0, PAGE, 2 ** 47 - PAGE, 2 ** 47, Number.MAX_SAFE_INTEGER), weight: 1 },
  { arbitrary: fc.integer({ min: 0, max: 2 ** 47 / PAGE }).map((n) => n * PAGE), weight: 1 },
);
const lenP = fc.oneof(
  { arbitrary: fc.integer({ min: 0, max: AREA_PAGES + 8 }).map((n) => n * PAGE), weight: 6 },
  { arbitrary: fc.integer({ min: 0, max: 3 * PAGE }), weight: 2 },
  { arbitrary: fc.constantFrom(2 ** 47, Number.MAX_SAFE_INTEGER, 2 ** 30, 2 ** 21), weight: 1 },
);
const pidP = fc.oneof(
  { arbitrary: fc.constant(ref('pid')), weight: 6 },
  { arbitrary: fc.constant(ref('victim')), weight: 1 },
  { arbitrary: fc.constant(ref('gonePid')), weight: 1 },
  { arbitrary: fc.constantFrom(0, 1, 999_999, 2 ** 31, 2 ** 53), weight: 1 },
);
const devP = fc.oneof({ arbitrary: fc.constantFrom(ref('dev'), ref('ext')), weight: 6 }, { arbitrary: fc.constantFrom(0, 999_999, 2 ** 40), weight: 1 });
const protP = mix(fc.subarray(['read', 'write', 'exec']), fc.array(fc.constantFrom('read', 'write', 'exec', 'READ', 'rw', '', 'none'), { maxLength: 5 }));
const boolP = fc.boolean();
const nameP = mix(fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/), fc.oneof(fc.string({ maxLength: 70 }), fc.constantFrom('', 'a'.repeat(65), 'a b', '../x')));
const base64P = fc.uint8Array({ maxLength: 3 * PAGE }).map((b) => Buffer.from(b).toString('base64'));
const intIn = (min: number, max: number) => mix(fc.oneof(fc.integer({ min, max }), fc.constantFrom(min, max)), fc.constantFrom(min - 1, max + 1, min + 0.5));

// ---- request generators ----------------------------------------------------------------------------

type Body = { kind: 'json'; value: unknown } | { kind: 'raw'; text: string; type: string } | { kind: 'none' };
interface Req {
  params: Record<string, unknown>;
  query: Record<string, unknown> | string | undefined;
  body: Body;
}
interface RouteSpec {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  params?: Record<string, fc.Arbitrary<unknown>>;
  query?: Record<string, fc.Arbitrary<unknown>>;
  /** The body's properties (plausible generators) and which are required; undefined: no body schema. */
  body?: { fields: Record<string, fc.Arbitrary<unknown>>; required: string[]; optional?: boolean };
  runs?: number;
  /** Routes that do not answer with JSON. */
  text?: boolean;
  /** Requests left out (documented in the property). */
  exclude?: (r: Req) => boolean;
  /** Runs before each request. */
  before?: () => Promise<void>;
}

/**
 * An object of the body's fields. Half the time a plausible one (every required field, some
 * optional ones, each value plausible): requests that reach the kernel and the devices. Otherwise
 * a mutant: fields missing or junk, sometimes an extra property.
 */
function objectOf(fields: Record<string, fc.Arbitrary<unknown>>, required: string[]): fc.Arbitrary<Record<string, unknown>> {
  const build = (presence: (k: string) => number, value: (a: fc.Arbitrary<unknown>) => fc.Arbitrary<unknown>, extra: fc.Arbitrary<Record<string, unknown> | undefined>) =>
    fc
      .tuple(
        fc.tuple(...Object.entries(fields).map(([k, a]) => (presence(k) === 0 ? value(a) : fc.option(value(a), { freq: presence(k), nil: undefined })).map((v) => [k, v] as const))),
        extra,
      )
      .map(([kv, ex]) => {
        const o: Record<string, unknown> = {};
        for (const [k, v] of kv) if (v !== undefined) o[k] = v;
        if (ex) for (const [k, v] of Object.entries(ex)) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
        return o;
      });
  // presence: 0 = always there, n = absent one time in n.
  const plausible = build((k) => (required.includes(k) ? 0 : 2), validOnly, fc.constant(undefined));
  const extra = fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 4 },
    { arbitrary: fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }), junk, { minKeys: 1, maxKeys: 2 }), weight: 1 },
    { arbitrary: fc.constantFrom<Record<string, unknown>>({ __proto__x: 1 }, { constructor: { prototype: { polluted: true } } }, { toString: 1 }, { '': 0 }), weight: 1 },
  );
  const mutant = build((k) => (required.includes(k) ? 8 : 2), field, extra);
  return fc.oneof({ arbitrary: plausible, weight: 3 }, { arbitrary: mutant, weight: 2 });
}

const rawJsonText = fc.oneof(
  fc.constantFrom('', ' ', '{', '}', '{"a":', '[', 'nul', 'tru', '{"addr":0x1000}', "{'a':1}", '{"a":1,}', '{"a" 1}', 'NaN', '1e99999', '-', '"\\ud800"', '\u0000', '{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"polluted":1}}}', '{"a":1}{"b":2}', '\ufeff{}'),
  fc.string({ maxLength: 40 }),
  fc.integer({ min: 1000, max: 50_000 }).map((n) => '['.repeat(n) + ']'.repeat(n)),
  fc.integer({ min: 1000, max: 50_000 }).map((n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)),
);
const otherType = fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', 'application/jsonx', 'APPLICATION/JSON', 'application/json;;', '*/*', 'application/vnd.api+json');

function bodyArb(spec: RouteSpec): fc.Arbitrary<Body> {
  const json = spec.body ? objectOf(spec.body.fields, spec.body.required) : fc.constant({});
  return fc.oneof(
    { arbitrary: json.map((value) => ({ kind: 'json' as const, value })), weight: spec.body ? 16 : 2 },
    { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((value) => ({ kind: 'json' as const, value })), weight: 2 },
    { arbitrary: deep.map((value) => ({ kind: 'json' as const, value })), weight: 1 },
    { arbitrary: rawJsonText.map((text) => ({ kind: 'raw' as const, text, type: 'application/json' })), weight: 2 },
    { arbitrary: fc.tuple(fc.string({ maxLength: 30 }), otherType).map(([text, type]) => ({ kind: 'raw' as const, text, type })), weight: 1 },
    { arbitrary: fc.constant({ kind: 'none' as const }), weight: spec.body?.optional || !spec.body ? 3 : 1 },
  );
}

/** Path parameters: mostly plausible, sometimes text that is no id at all (sent verbatim). */
const paramJunk = fc.oneof(
  fc.constantFrom('abc', '-1', '1.5', '1e3', '1e400', '0x10', '99999999999999999999999', ' 1', '1 ', '+1', '%20', '%zz', '%', '..', '.', '%2F', '1%2F2', '%00', 'NaN', 'Infinity', '\u00e9', 'null', '[]', '0'),
  fc.string({ maxLength: 12 }).map((s) => encodeURIComponent(s)),
  fc.constantFrom(-1, 2 ** 53, 2 ** 64, 1e300).map(String),
  fc.integer({ min: 10, max: 3000 }).map((n) => '9'.repeat(n)),
);
const paramArb = (plausible: fc.Arbitrary<unknown>) => fc.oneof({ arbitrary: plausible, weight: 8 }, { arbitrary: paramJunk.map((s) => ({ verbatim: s })), weight: 1 });

/** A query value: plausible, junk text, repeated, or absent. */
const queryValue = (plausible: fc.Arbitrary<unknown>) =>
  fc.oneof(
    { arbitrary: plausible, weight: 5 },
    { arbitrary: nanish, weight: 2 },
    { arbitrary: fc.string({ maxLength: 12 }), weight: 1 },
    { arbitrary: fc.tuple(plausible, plausible), weight: 1 },
    { arbitrary: fc.constant(undefined), weight: 1 },
  );
function queryArb(spec: RouteSpec): fc.Arbitrary<Record<string, unknown> | string | undefined> {
  const fields = Object.entries(spec.query ?? {}).map(([k, a]) => queryValue(a).map((v) => [k, v] as const));
  const rec = fc
    .tuple(fc.tuple(...fields), fc.option(fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }), fc.string({ maxLength: 8 }), { maxKeys: 2 }), { nil: undefined }))
    .map(([kv, extra]) => ({ ...(extra ?? {}), ...Object.fromEntries(kv) }) as Record<string, unknown>);
  return fc.oneof(
    { arbitrary: rec, weight: 8 },
    { arbitrary: fc.constantFrom('addr', 'addr=', '&&&', '=', 'addr=%zz', 'addr=1&addr=2&addr=3', 'pages=%', '%%%', '?', 'a[b]=1', 'addr[]=1', `${'a'.repeat(3000)}=1`), weight: 1 },
    { arbitrary: fc.constant(undefined), weight: 1 },
  );
}

function reqArb(spec: RouteSpec): fc.Arbitrary<Req> {
  const params = fc.record(Object.fromEntries(Object.entries(spec.params ?? {}).map(([k, a]) => [k, paramArb(a)])));
  const arb = fc.record({ params, query: queryArb(spec), body: bodyArb(spec) });
  return spec.exclude ? arb.filter((r) => !spec.exclude!(r)) : arb;
}

// ---- the routes ------------------------------------------------------------------------------------

const PID = { pid: pidP };
const ID = { id: devP };
const AddrLen = { fields: { addr: addrP, length: lenP }, required: ['addr', 'length'] };
const dmirror = (c: string): RouteSpec => ({
  method: 'POST',
  path: `/v1/devices/{id}/dmirror/${c}`,
  params: ID,
  body: { fields: { addr: addrP, npages: intIn(0, 70), data: base64P }, required: ['addr', 'npages'] },
});
const dmaOptions = fc.record(
  {
    rate: fc.integer({ min: 0, max: 200 }),
    pattern: fc.constantFrom('random', 'sequential', 'hotset'),
    writeMix: fc.double({ min: 0, max: 1, noNaN: true }),
    start: addrP,
    end: addrP,
    transferUs: fc.integer({ min: 0, max: 1000 }),
    bytes: fc.integer({ min: 1, max: PAGE }),
  },
  { requiredKeys: [] },
);
const goodOptions = fc.record(
  {
    xnack: boolP,
    granularityPages: validOnly(intIn(1, 512)),
    mrs: fc.array(fc.record({ addr: addrP, length: fc.integer({ min: 1, max: (AREA_PAGES + 4) * PAGE }), write: boolP }, { requiredKeys: ['addr', 'length'] }), { maxLength: 3 }),
    implicit: boolP,
    memslots: fc.array(fc.record({ id: fc.nat(8), baseGfn: fc.nat(2 ** 30), npages: fc.nat(AREA_PAGES + 4), hva: addrP }), { maxLength: 3 }),
    dma: dmaOptions,
  },
  { requiredKeys: [] },
);
/** Options of the wrong shape: each documented option with junk, or junk inside its items. */
const badOptions = fc.oneof(
  fc.record({ xnack: junk, granularityPages: junk, mrs: junk, implicit: junk, memslots: junk, dma: junk }, { requiredKeys: [] }),
  fc.record({ mrs: fc.array(fc.record({ addr: fc.oneof(addrP, junk), length: fc.oneof(lenP, junk) }, { requiredKeys: [] }), { minLength: 1, maxLength: 2 }) }),
  fc.record({ memslots: fc.array(fc.record({ id: fc.oneof(fc.nat(), junk), baseGfn: junk, npages: fc.oneof(lenP, junk), hva: addrP }, { requiredKeys: [] }), { minLength: 1, maxLength: 2 }) }),
  fc.record({ dma: fc.record({ rate: junk, pattern: junk, writeMix: junk, start: junk, end: junk, transferUs: junk, bytes: junk }, { requiredKeys: [] }) }),
);
const deviceOptions = mix(goodOptions, badOptions);

const ROUTES: Record<string, RouteSpec> = {
  'GET /healthz': { method: 'GET', path: '/healthz', runs: 5 },
  'GET /readyz': { method: 'GET', path: '/readyz', runs: 5 },
  'GET /v1/events': { method: 'GET', path: '/v1/events', query: { pid: pidP, since: fc.oneof(fc.nat(5000), fc.constantFrom(2 ** 53, 0)), limit: intIn(0, 10_001) } },
  'GET /v1/trace': { method: 'GET', path: '/v1/trace', query: { pid: pidP, since: fc.oneof(fc.nat(5000), fc.constantFrom(2 ** 53, 0)), limit: intIn(0, 60_000) } },
  'GET /v1/notifier': { method: 'GET', path: '/v1/notifier', runs: 5 },
  'POST /v1/processes': { method: 'POST', path: '/v1/processes', body: { fields: { name: nameP }, required: [] } },
  'GET /v1/processes': { method: 'GET', path: '/v1/processes', runs: 5 },
  'GET /v1/processes/{pid}': { method: 'GET', path: '/v1/processes/{pid}', params: PID },
  // The fixture's process is not deleted here (rebuilding its devices costs a worker start): a
  // fresh victim, an exited pid, or none.
  'DELETE /v1/processes/{pid}': { method: 'DELETE', path: '/v1/processes/{pid}', params: { pid: fc.oneof({ arbitrary: fc.constant(ref('victim')), weight: 5 }, { arbitrary: fc.constantFrom(ref('gonePid'), 0, 999_999, 2 ** 53), weight: 1 }) } },
  'POST /v1/processes/{pid}/fork': { method: 'POST', path: '/v1/processes/{pid}/fork', params: PID },
  'GET /v1/processes/{pid}/maps': { method: 'GET', path: '/v1/processes/{pid}/maps', params: PID },
  'GET /v1/processes/{pid}/pagemap': {
    method: 'GET',
    path: '/v1/processes/{pid}/pagemap',
    params: PID,
    query: {
      addr: fc.oneof(addrP, addrP.map((a) => (isRef(a) ? a : `0x${(a as number).toString(16)}`))),
      pages: fc.oneof(intIn(0, AREA_PAGES + 4), fc.constantFrom(MAX_PAGEMAP_PAGES + 1, 2 ** 40, 2 ** 53)),
    },
  },
  'POST /v1/processes/{pid}/mmap': {
    method: 'POST',
    path: '/v1/processes/{pid}/mmap',
    params: PID,
    body: {
      fields: {
        addr: addrP,
        length: fc.oneof(lenP, fc.constantFrom(2 ** 46, 2 ** 47 + PAGE)),
        prot: protP,
        shared: boolP,
        fixed: boolP,
        populate: boolP,
        hugepage: boolP,
        file: fc.record({ id: fc.oneof(fc.constant(ref('file')), fc.nat()), offset: lenP }, { requiredKeys: [] }),
        name: nameP,
      },
      required: ['length', 'prot'],
    },
    // MAP_POPULATE of a range larger than RAM runs until the OOM killer picks the task (seconds
    // each, by design): the regression case below covers it once; random runs stay fast.
    exclude: (r) => {
      const b = r.body.kind === 'json' ? (r.body.value as { populate?: unknown; length?: unknown } | null) : null;
      return !!b && typeof b === 'object' && b.populate === true && typeof b.length === 'number' && b.length > 2 ** 26;
    },
  },
  'POST /v1/processes/{pid}/munmap': { method: 'POST', path: '/v1/processes/{pid}/munmap', params: PID, body: AddrLen },
  'POST /v1/processes/{pid}/mremap': {
    method: 'POST',
    path: '/v1/processes/{pid}/mremap',
    params: PID,
    body: { fields: { addr: addrP, length: lenP, newLength: lenP, maymove: boolP, fixed: boolP, dontunmap: boolP, newAddr: addrP }, required: ['addr', 'length', 'newLength'] },
  },
  'POST /v1/processes/{pid}/mprotect': { method: 'POST', path: '/v1/processes/{pid}/mprotect', params: PID, body: { fields: { addr: addrP, length: lenP, prot: protP }, required: ['addr', 'length', 'prot'] } },
  'POST /v1/processes/{pid}/madvise': {
    method: 'POST',
    path: '/v1/processes/{pid}/madvise',
    params: PID,
    body: { fields: { addr: addrP, length: lenP, advice: mix(fc.constantFrom(...ADVICES), fc.constantFrom('DONTNEED', 'remove', 'cold')) }, required: ['addr', 'length', 'advice'] },
  },
  'POST /v1/processes/{pid}/clear_refs': { method: 'POST', path: '/v1/processes/{pid}/clear_refs', params: PID, body: { fields: { mode: mix(fc.constantFrom('soft-dirty', 'referenced'), fc.constantFrom('all', '4')) }, required: ['mode'] } },
  'POST /v1/processes/{pid}/brk': { method: 'POST', path: '/v1/processes/{pid}/brk', params: PID, body: { fields: { addr: addrP }, required: ['addr'] } },
  'POST /v1/processes/{pid}/msync': { method: 'POST', path: '/v1/processes/{pid}/msync', params: PID, body: AddrLen },
  'POST /v1/processes/{pid}/memory/read': {
    method: 'POST',
    path: '/v1/processes/{pid}/memory/read',
    params: PID,
    body: { fields: { addr: addrP, length: mix(fc.oneof(fc.integer({ min: 0, max: 3 * PAGE }), fc.constant(64 * 2 ** 20)), fc.constant(64 * 2 ** 20 + 1)) }, required: ['addr', 'length'] },
  },
  'POST /v1/processes/{pid}/memory/write': {
    method: 'POST',
    path: '/v1/processes/{pid}/memory/write',
    params: PID,
    body: { fields: { addr: addrP, data: mix(base64P, fc.constantFrom('=', '====', 'A', 'AB=', 'A===', '***', 'QUJD\n', ' QUJD')) }, required: ['addr', 'data'] },
  },
  'POST /v1/files': { method: 'POST', path: '/v1/files', body: { fields: { size: intIn(0, 2 ** 30) }, required: ['size'] } },
  'POST /v1/kernel/reclaim': {
    method: 'POST',
    path: '/v1/kernel/reclaim',
    body: { fields: { pages: intIn(1, 1 << 20), pid: pidP, addr: addrP, length: lenP }, required: [] },
  },
  'POST /v1/kernel/compact': { method: 'POST', path: '/v1/kernel/compact', body: { fields: { node: intIn(0, 63) }, required: [] } },
  'POST /v1/kernel/migrate': { method: 'POST', path: '/v1/kernel/migrate', body: { fields: { pid: pidP, addr: addrP, length: lenP, node: intIn(0, 63) }, required: ['pid', 'addr', 'length', 'node'] } },
  'POST /v1/kernel/numa-balance': { method: 'POST', path: '/v1/kernel/numa-balance', body: { fields: { pid: pidP, bytes: fc.oneof(intIn(4096, 2 ** 30), fc.constantFrom(2 ** 47, Number.MAX_SAFE_INTEGER)) }, required: ['pid'] } },
  'POST /v1/kernel/ksm': { method: 'POST', path: '/v1/kernel/ksm', body: { fields: {}, required: [], optional: true }, runs: 10 },
  'POST /v1/kernel/khugepaged': {
    method: 'POST',
    path: '/v1/kernel/khugepaged',
    body: { fields: { pid: pidP, addr: addrP, max: fc.oneof(intIn(1, 64), fc.constantFrom(2 ** 31, Number.MAX_SAFE_INTEGER)) }, required: [], optional: true },
  },
  'POST /v1/kernel/thp-split': { method: 'POST', path: '/v1/kernel/thp-split', body: { fields: { pid: pidP, addr: addrP }, required: ['pid', 'addr'] } },
  'POST /v1/kernel/writeback': { method: 'POST', path: '/v1/kernel/writeback', body: { fields: {}, required: [], optional: true }, runs: 10 },
  'POST /v1/kernel/oom-reap': {
    method: 'POST',
    path: '/v1/kernel/oom-reap',
    // The killer's choice (no pid) is the largest process: a bait larger than the fixture, so that
    // every run does not rebuild the fixture's devices.
    before: async () => {
      const p = svc.kernel.createProcess();
      await svc.kernel.mmap(p.pid, { length: 2 * AREA_PAGES * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
    },
    body: { fields: { pid: fc.oneof({ arbitrary: fc.constant(ref('victim')), weight: 4 }, { arbitrary: pidP, weight: 1 }), kill: boolP }, required: [], optional: true },
  },
  'POST /v1/kernel/trigger': {
    method: 'POST',
    path: '/v1/kernel/trigger',
    runs: 30,
    // Origins that end or copy the fixture's process (exit, oom_reaper, fork) are left to test/http/trigger.int.test.ts.
    body: { fields: { origin: mix(fc.constantFrom(...ORIGINS.filter((o) => !['exit', 'oom_reaper', 'fork'].includes(o))), fc.constantFrom('nope', '', 'EXIT')), pid: pidP, addr: addrP, length: lenP, node: intIn(0, 63) }, required: ['origin', 'pid', 'addr', 'length'] },
  },
  'GET /v1/fidelity': { method: 'GET', path: '/v1/fidelity', runs: 3 },
  'GET /v1/kernel/daemons': { method: 'GET', path: '/v1/kernel/daemons', runs: 5 },
  'PUT /v1/kernel/daemons': {
    method: 'PUT',
    path: '/v1/kernel/daemons',
    body: { fields: Object.fromEntries(DAEMON_NAMES.map((n) => [n, mix(fc.oneof(fc.constantFrom(0, 1000, 0.5), fc.double({ min: 0, max: 5, noNaN: true })), fc.constantFrom(1001, -1))])), required: [] },
  },
  'GET /v1/kernel/stats': { method: 'GET', path: '/v1/kernel/stats', runs: 5 },
  'GET /v1/kernel/audit': { method: 'GET', path: '/v1/kernel/audit', runs: 5 },
  'GET /v1/progress': { method: 'GET', path: '/v1/progress', runs: 5 },
  'GET /v1/devices': { method: 'GET', path: '/v1/devices', runs: 5 },
  'POST /v1/devices': {
    method: 'POST',
    path: '/v1/devices',
    runs: 20,
    body: {
      fields: {
        kind: mix(fc.constantFrom(...DEVICE_KINDS), fc.constantFrom('fpga', 'GPU', '')),
        name: nameP,
        pid: pidP,
        process: mix(fc.constant('fuzz-main'), fc.oneof(fc.constantFrom('nope', ''), fc.string({ maxLength: 70 }))),
        policy: mix(fc.constantFrom(...EVENT_POLICIES), fc.constant('lazy')),
        options: deviceOptions,
        deadlineMs: fc.oneof(intIn(10, 600_000), fc.constant(2000)),
      },
      required: ['kind'],
    },
  },
  'GET /v1/devices/{id}': { method: 'GET', path: '/v1/devices/{id}', params: ID },
  'DELETE /v1/devices/{id}': { method: 'DELETE', path: '/v1/devices/{id}', params: ID, runs: 10 },
  'POST /v1/devices/{id}/faults': {
    method: 'POST',
    path: '/v1/devices/{id}/faults',
    params: ID,
    runs: 25,
    body: {
      fields: {
        ackDelayUs: mix(fc.integer({ min: 0, max: 20_000 }), fc.constant(60_000_001)),
        hang: boolP,
        crash: boolP,
        refuseNonblock: boolP,
        disconnect: boolP,
        bug: mix(fc.constantFrom(null, 'ack-before-quiesce', 'skip-seq-retry', 'ignore-event:UNMAP', 'ignore-event:CLEAR'), fc.constantFrom('ignore-event:NOPE', 'eat-memory')),
      },
      required: [],
    },
  },
  'POST /v1/devices/{id}/dma': { method: 'POST', path: '/v1/devices/{id}/dma', params: ID, body: { fields: { addr: addrP, length: mix(fc.oneof({ arbitrary: fc.integer({ min: 1, max: 70 * PAGE }), weight: 12 }, { arbitrary: fc.constant(64 * 2 ** 20), weight: 1 }), fc.constantFrom(0, 64 * 2 ** 20 + 1)), write: boolP }, required: ['addr', 'length'] } },
  'GET /v1/devices/{id}/mirror': {
    method: 'GET',
    path: '/v1/devices/{id}/mirror',
    params: ID,
    query: { addr: addrP, pages: fc.oneof(intIn(1, 4096), fc.constant(0)) },
  },
  'GET /v1/proto': { method: 'GET', path: '/v1/proto', text: true, runs: 5 },
  'GET /v1/proto/proto/devmirror/v1/notifier.proto': { method: 'GET', path: '/v1/proto/proto/devmirror/v1/notifier.proto', text: true, runs: 5 },
  'GET /metrics': { method: 'GET', path: '/metrics', text: true, runs: 5 },
};
for (const c of ['read', 'write', 'migrate-to-device', 'migrate-to-system', 'snapshot', 'exclusive', 'check-exclusive', 'release']) ROUTES[`POST /v1/devices/{id}/dmirror/${c}`] = dmirror(c);

// ---- the service and its fixture -----------------------------------------------------------------------

async function mapArea(pid: number, at?: number): Promise<number> {
  const k = svc.kernel;
  const addr = await k.mmap(pid, { ...(at ? { addr: at, fixed: true } : {}), length: AREA_PAGES * PAGE, prot: PROT.READ | PROT.WRITE, populate: true });
  await k.write(pid, addr, new Uint8Array(AREA_PAGES * PAGE).fill(0x5a));
  return addr;
}

/** Brings the fixture back where a request destroyed it (an exited process, a removed device). */
async function ensureFixture(freshArea = false): Promise<void> {
  const k = svc.kernel;
  let p = k.findProcess(fx.pid);
  if (!p || p.mm.exiting) {
    if (p) await k.exit(p.pid).catch(() => undefined);
    const stale = k.findProcess('fuzz-main');
    if (stale) await k.exit(stale.pid).catch(() => undefined);
    p = k.createProcess('fuzz-main');
    fx.pid = p.pid;
    fx.addr = await mapArea(p.pid);
  } else if (freshArea || !p.mm.vmas.find(fx.addr)) {
    fx.addr = await mapArea(p.pid, fx.addr);
  }
  const d = svc.devices.devices.get(fx.dev);
  if (!d || !d.alive || d.pid !== fx.pid) {
    if (d) await svc.devices.remove(d.id).catch(() => undefined);
    fx.dev = (await svc.devices.create({ kind: 'dmirror', pid: fx.pid, name: `fuzz-dm-${fx.pid}-${Date.now()}` })).id;
  }
  const e = svc.channel.devices.get(fx.ext);
  if (!ext?.connected || !e || !e.alive || ![...e.subs.values()].some((s) => s.pid === fx.pid)) {
    await ext?.close().catch(() => undefined);
    ext = new DeviceClient({ url: `ws://127.0.0.1:${port}/v1/notifier/ws`, token: 'devmirror-local', kind: 'dmirror', name: 'fuzz-ext' });
    ext.onCommand('mirror-map', (a) => new Array(Math.min(Number(a.npages) || 0, 4096)).fill(-1));
    ext.onCommand('dma-sweep', () => ({ ok: 0, failed: 0, faults: 0 }));
    ext.onCommand('read', (a) => ({ cpages: Number(a.npages) || 0, faults: 0 }));
    const w = await ext.connect();
    fx.ext = w.clientId;
    await ext.subscribeInterval({ pid: fx.pid, start: fx.addr, length: AREA_PAGES * PAGE });
  }
}

/** Undoes what a request may have added: extra processes, devices, daemon rates, injected faults. */
async function tidy(faults = false): Promise<void> {
  const k = svc.kernel;
  for (const d of svc.devices.list()) if (d.id !== fx.dev) await svc.devices.remove(d.id).catch(() => undefined);
  for (const p of k.liveProcesses()) if (p.pid !== fx.pid && !p.mm.exiting) await k.exit(p.pid).catch(() => undefined);
  for (const st of k.daemons.list()) if (st.rate !== 0) k.daemons.set(st.name, 0);
  // A device left hanging or slowed by fault injection would stall every later invalidation.
  const d = svc.devices.devices.get(fx.dev);
  if (faults && d?.alive) await d.inject({ ackDelayUs: 0, hang: false, refuseNonblock: false }).catch(() => undefined);
}

beforeAll(async () => {
  svc = new Service({ kernel: { memoryBytes: 24 * 1024 * 1024, deviceMemoryBytes: 8 * 1024 * 1024 }, deadlineMs: 2000, channel: { deadlineMs: 2000 }, traceEvents: 50_000 });
  app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  await svc.start();
  const a = app.server.address();
  port = typeof a === 'object' && a ? a.port : 0;
  const gone = svc.kernel.createProcess();
  fx.gonePid = gone.pid;
  await svc.kernel.exit(gone.pid);
  fx.file = svc.kernel.createFile(16 * PAGE).id;
  await ensureFixture();
}, 60_000);
afterAll(async () => {
  await ext?.close().catch(() => undefined);
  await svc?.stop();
  await app?.close();
});

// ---- sending and checking --------------------------------------------------------------------------

interface Sent {
  method: string;
  url: string;
  body: Body;
  /** The JSON body as sent (refs resolved). */
  json?: unknown;
}

async function buildUrl(spec: RouteSpec, r: Req): Promise<string> {
  let url = spec.path;
  for (const [k, v] of Object.entries(r.params)) {
    const text = typeof v === 'object' && v !== null && 'verbatim' in v ? String((v as { verbatim: string }).verbatim) : encodeURIComponent(String(await resolve(v)));
    url = url.replace(`{${k}}`, text);
  }
  if (typeof r.query === 'string') return `${url}?${r.query}`;
  if (r.query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(r.query)) {
      if (v === undefined) continue;
      for (const x of Array.isArray(v) ? v : [v]) q.append(k, String(await resolve(x)));
    }
    const s = q.toString();
    if (s) url += `?${s}`;
  }
  return url;
}

async function send(spec: RouteSpec, r: Req): Promise<{ sent: Sent; status: number; headers: Record<string, unknown>; text: string }> {
  const url = await buildUrl(spec, r);
  const sent: Sent = { method: spec.method, url, body: r.body };
  let res;
  if (r.body.kind === 'json') {
    sent.json = await resolve(r.body.value);
    res = await app.inject({ method: spec.method, url, payload: JSON.stringify(sent.json) ?? 'null', headers: { 'content-type': 'application/json' } });
  } else if (r.body.kind === 'raw') {
    res = await app.inject({ method: spec.method, url, payload: r.body.text, headers: { 'content-type': r.body.type } });
  } else {
    res = await app.inject({ method: spec.method, url });
  }
  return { sent, status: res.statusCode, headers: res.headers, text: res.body };
}

const show = (s: Sent): string => `${s.method} ${s.url.slice(0, 300)} ${s.body.kind === 'json' ? JSON.stringify(s.json)?.slice(0, 500) : s.body.kind === 'raw' ? `[${s.body.type}] ${JSON.stringify(s.body.text.slice(0, 200))}` : '(no body)'}`;

/** Every error is a documented `{ code, message }` with the catalogue's status. */
function checkError(status: number, text: string, what: string): ErrorCode {
  let b: { code?: unknown; message?: unknown };
  try {
    b = JSON.parse(text);
  } catch {
    throw new Error(`${what}: status ${status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  expect(ERROR_CODES, `${what}: undocumented code ${String(b.code)} (${text.slice(0, 200)})`).toContain(b.code);
  expect(typeof b.message, `${what}: no message`).toBe('string');
  const code = b.code as ErrorCode;
  // fastify's own 4xx refusals (an unsupported media type, ...) keep their status under DM_ERR_VALIDATION.
  if (!(code === 'DM_ERR_VALIDATION' && status >= 400 && status < 500)) expect(status, `${what}: ${code} with status ${status}, the catalogue says ${ERRORS[code].status}`).toBe(ERRORS[code].status);
  return code;
}

function allowedKeys(spec: RouteSpec): Set<string> | null {
  return spec.body ? new Set(Object.keys(spec.body.fields)) : null;
}

async function check(spec: RouteSpec, r: Awaited<ReturnType<typeof send>>): Promise<void> {
  const what = show(r.sent);
  expect(r.status, `${what} -> ${r.status} ${r.text.slice(0, 300)}`).toBeLessThan(500);
  expect(r.status, what).toBeGreaterThanOrEqual(200);
  if (r.status >= 400) {
    const code = checkError(r.status, r.text, what);
    if (code === 'DM_ERR_NOT_FOUND') return;
  } else if (!spec.text) {
    expect(() => JSON.parse(r.text), `${what}: a 2xx reply that is not JSON`).not.toThrow();
  }
  if (r.status === 404) return; // the path did not name a route or an object: the body was not looked at
  // A pagemap answers one entry per page asked for (an empty list for too many was a silent lie).
  if (spec.path.endsWith('/pagemap') && r.status === 200) {
    const pages = new URL(r.sent.url, 'http://x').searchParams.get('pages');
    expect(JSON.parse(r.text).items.length, `${what}: entries`).toBe(pages === null || pages === '' ? 1 : Number(pages.trim()));
  }
  // A body object with a property its schema does not have is refused (additionalProperties: false).
  const allowed = allowedKeys(spec);
  const j = r.sent.json;
  if (allowed && spec.method !== 'GET' && j && typeof j === 'object' && !Array.isArray(j) && Object.keys(j).some((k) => !allowed.has(k))) {
    expect([r.status, JSON.parse(r.text).code], `${what}: an unknown property was not refused`).toEqual([400, 'DM_ERR_VALIDATION']);
  }
  // A body that is not JSON, sent as JSON, is refused.
  if (spec.method !== 'GET' && r.sent.body.kind === 'raw' && r.sent.body.type === 'application/json') {
    let valid = true;
    try {
      JSON.parse(r.sent.body.text.replace(/^\ufeff/, '')); // a leading byte order mark is allowed
    } catch {
      valid = false;
    }
    if (!valid) expect([r.status, JSON.parse(r.text).code], `${what}: a body that is not JSON was not refused`).toEqual([400, 'DM_ERR_VALIDATION']);
  }
}

/** Process warnings (a timer set from an unchecked number overflows: TimeoutOverflowWarning). */
const warnings: string[] = [];
const onWarning = (w: Error): void => {
  if (w.name === 'TimeoutOverflowWarning') warnings.push(`${w.name}: ${w.message}`);
};
beforeAll(() => {
  process.on('warning', onWarning);
});
afterAll(() => {
  process.off('warning', onWarning);
});

/** The service still answers, the kernel's books balance, and no timer was set from a wild number. */
async function healthy(what: string): Promise<void> {
  await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
  expect(warnings.splice(0), `after ${what}: process warnings`).toEqual([]);
  const h = await app.inject({ method: 'GET', url: '/healthz' });
  expect(h.statusCode, `after ${what}: /healthz`).toBe(200);
  // The audit is defined for a quiescent kernel: work a request started in the background (a device
  // torn down, its memory evicted) settles first; a real leak stays.
  const audit = async () => {
    const a = await app.inject({ method: 'GET', url: '/v1/kernel/audit' });
    expect(a.statusCode, `after ${what}: /v1/kernel/audit`).toBe(200);
    expect(a.json().problems, `after ${what}: the frame accounting audit`).toEqual([]);
  };
  await eventually(audit, 3000).catch(audit);
}

const STATS = new Map<string, number>();
afterAll(() => {
  if (process.env.FUZZ_STATS) console.log([...STATS].sort().map(([k, n]) => `${n}\t${k}`).join('\n'));
});

async function fuzzRoute(spec: RouteSpec): Promise<void> {
  await tidy();
  await ensureFixture(true);
  await fc.assert(
    fc.asyncProperty(reqArb(spec), async (req) => {
      await ensureFixture();
      await spec.before?.();
      let r: Awaited<ReturnType<typeof send>>;
      try {
        r = await send(spec, req);
        if (process.env.FUZZ_STATS) {
          const key = `${spec.method} ${spec.path} ${r.status} ${r.status >= 400 ? JSON.parse(r.text).code : ''}`;
          STATS.set(key, (STATS.get(key) ?? 0) + 1);
        }
        await check(spec, r);
      } finally {
        await tidy(spec.path.endsWith('/faults'));
      }
      await healthy(show(r.sent));
    }),
    { numRuns: spec.runs ?? RUNS },
  );
}

// ---- the properties ----------------------------------------------------------------------------------

describe('control-plane fuzzing', () => {
  it('has a generator for every route of the OpenAPI document', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/docs/json' })).json();
    const routes = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
    // The event stream never ends: it has its own property below, over a real socket.
    expect(routes.filter((r) => !ROUTES[r] && r !== 'GET /v1/stream')).toEqual([]);
    expect(routes).toContain('GET /v1/stream');
  });

  for (const [name, spec] of Object.entries(ROUTES)) {
    it(`${name}: no 5xx, documented errors, healthy, audit clean`, async () => {
      await fuzzRoute(spec);
    });
  }

  it('any method and path: 404 DM_ERR_NOT_FOUND or a documented answer, never a 5xx', async () => {
    const seg = fc.oneof(fc.constantFrom('v1', 'processes', 'devices', 'kernel', '1', 'docs', 'json', 'static', '..', '%zz', '%2e%2e', '', 'proto', 'dmirror', 'metrics'), fc.string({ maxLength: 6 }).map(encodeURIComponent));
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'), fc.array(seg, { maxLength: 5 }), async (method, segs) => {
        const url = `/${segs.join('/')}`;
        const r = await app.inject({ method: method as 'GET', url });
        const what = `${method} ${url}`;
        expect(r.statusCode, `${what} -> ${r.statusCode} ${r.body.slice(0, 200)}`).toBeLessThan(500);
        if (r.statusCode >= 400 && method !== 'HEAD') checkError(r.statusCode, r.body, what);
        await healthy(what);
      }),
      { numRuns: RUNS * 2 },
    );
  });

  it('GET /v1/stream with any query: an event stream, and the service stays healthy', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.constant(''), fc.string({ maxLength: 30 }).map((s) => `?${encodeURIComponent(s)}=${encodeURIComponent(s)}`), fc.constantFrom('?since=-1', '?since=abc', '?limit=1e400', '?%zz')), async (q) => {
        const { status, type } = await new Promise<{ status: number; type: string }>((res, rej) => {
          const req = http.get({ host: '127.0.0.1', port, path: `/v1/stream${q}` }, (m) => {
            res({ status: m.statusCode ?? 0, type: String(m.headers['content-type']) });
            m.destroy();
          });
          req.on('error', rej);
          req.setTimeout(5000, () => req.destroy(new Error('no answer from /v1/stream')));
        });
        // A path the router cannot decode is refused before the route; anything else streams.
        if (status !== 200) expect([400, 404], `/v1/stream${q} -> ${status}`).toContain(status);
        else expect(type).toMatch(/^text\/event-stream/);
        await healthy(`/v1/stream${q}`);
      }),
      { numRuns: 20 },
    );
  });
});

// ---- regressions: shrunk counterexamples the fuzzing found ------------------------------------------

describe('control-plane fuzzing: regressions', () => {
  it('a path the router refuses (bad escape, over-long parameter) is 400 DM_ERR_VALIDATION, not fastify FST_ERR_* (was FST_ERR_BAD_URL / FST_ERR_MAX_PARAM_LENGTH 414)', async () => {
    for (const url of ['/v1/processes/%zz/mremap', `/v1/processes/${'9'.repeat(101)}`, `/v1/devices/${'9'.repeat(101)}/dmirror/read`, '/%zz']) {
      const r = await app.inject({ method: url.includes('dmirror') || url.includes('mremap') ? 'POST' : 'GET', url, payload: url.includes('mremap') || url.includes('dmirror') ? {} : undefined });
      expect([r.statusCode, r.json().code], url).toEqual([400, 'DM_ERR_VALIDATION']);
      expect(typeof r.json().message).toBe('string');
    }
    await healthy('bad paths');
  });

  it('GET pagemap of more than MAX_PAGEMAP_PAGES pages is 413 DM_ERR_TOO_LARGE, as the kernel documents (was 200 with an empty list)', async () => {
    for (const pages of [MAX_PAGEMAP_PAGES + 1, 2 ** 40]) {
      const r = await app.inject({ method: 'GET', url: `/v1/processes/${fx.pid}/pagemap?addr=${fx.addr}&pages=${pages}` });
      expect([r.statusCode, r.json().code], String(pages)).toEqual([413, 'DM_ERR_TOO_LARGE']);
    }
  });

  it('PUT /v1/kernel/daemons with a tiny rate runs the daemon (almost) never (was: a timer overflow, so every millisecond)', async () => {
    const r = await app.inject({ method: 'PUT', url: '/v1/kernel/daemons', payload: { ksmd: 1e-300 } });
    expect(r.statusCode, r.body).toBe(200);
    const before = svc.kernel.daemons.list().find((d) => d.name === 'ksmd')!.runs;
    await new Promise((res) => setTimeout(res, 100));
    const after = svc.kernel.daemons.list().find((d) => d.name === 'ksmd')!.runs;
    await tidy();
    expect(after - before).toBe(0);
    await healthy('a tiny daemon rate');
  });

  it('POST /v1/devices with mistyped personality options is 400 DM_ERR_VALIDATION (was a worker exiting while starting: 500 DM_ERR_INTERNAL)', async () => {
    const before = svc.devices.list().length;
    for (const options of [{ mrs: [{}] }, { mrs: [{ addr: fx.addr, length: 0 }] }, { memslots: [{ hva: fx.addr }] }, { granularityPages: 0 }, { dma: { rate: 'fast' } }]) {
      const r = await app.inject({ method: 'POST', url: '/v1/devices', payload: { kind: 'rdma', pid: fx.pid, options } });
      expect([r.statusCode, r.json().code], JSON.stringify(options)).toEqual([400, 'DM_ERR_VALIDATION']);
    }
    expect(svc.devices.list().length).toBe(before);
    await healthy('device options');
  });

  it('MAP_POPULATE of a read-only THP mapping steps 2 MiB at a time (was page by page over huge zero pages: 64 GiB took 25 s, 64 TiB hours)', async () => {
    const pid = await resolveRef(ref('victim'));
    const t = Date.now();
    const r = await app.inject({ method: 'POST', url: `/v1/processes/${pid}/mmap`, payload: { length: 2 ** 36, prot: ['read'], hugepage: true, populate: true } });
    expect(r.statusCode, r.body).toBe(200);
    expect(Date.now() - t).toBeLessThan(8000);
    const pm = (await app.inject({ method: 'GET', url: `/v1/processes/${pid}/pagemap?addr=${r.json().addr + 2 ** 35}&pages=1` })).json();
    expect(pm.items[0]).toMatchObject({ present: true, huge: true, zeroPage: true });
    await tidy();
    await healthy('read-only THP populate');
  }, 60_000);

  it('MADV_COLLAPSE and khugepaged over a 64 TiB mapping with two populated 2 MiB ranges take milliseconds, not a walk over 2^25 PMDs', async () => {
    const pid = await resolveRef(ref('victim'));
    const addr = (await app.inject({ method: 'POST', url: `/v1/processes/${pid}/mmap`, payload: { length: 2 ** 46, prot: ['read', 'write'], hugepage: true } })).json().addr as number;
    const data = Buffer.alloc(PAGE, 7).toString('base64');
    for (const at of [addr, addr + 2 ** 46 - 2 * 2 ** 20]) {
      for (let i = 0; i < 4; i++) expect((await app.inject({ method: 'POST', url: `/v1/processes/${pid}/memory/write`, payload: { addr: at + i * PAGE, data } })).statusCode).toBe(200);
    }
    // Split what the first touches faulted as huge pages, so that there is something to collapse.
    for (const at of [addr, addr + 2 ** 46 - 2 * 2 ** 20]) await app.inject({ method: 'POST', url: '/v1/kernel/thp-split', payload: { pid, addr: at } });
    let t = Date.now();
    const c = await app.inject({ method: 'POST', url: `/v1/processes/${pid}/madvise`, payload: { addr, length: 2 ** 46, advice: 'collapse' } });
    expect(c.statusCode, c.body).toBeLessThan(500);
    expect(Date.now() - t, 'MADV_COLLAPSE').toBeLessThan(8000);
    t = Date.now();
    const kh = await app.inject({ method: 'POST', url: '/v1/kernel/khugepaged', payload: { max: 2 ** 31 } });
    expect(kh.statusCode, kh.body).toBe(200);
    expect(Date.now() - t, 'khugepaged').toBeLessThan(8000);
    await tidy();
    await healthy('collapse of a 64 TiB mapping');
  }, 120_000);
});
