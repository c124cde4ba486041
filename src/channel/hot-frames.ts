/**
 * The invalidation round's frames on the wire, written and read by hand: InvalidateStart and
 * InvalidateEnd (server to client) and InvalidateAck (client to server). Every round of every
 * external client carries them, and the generic path (protobufjs, then a walk that turns Longs and
 * prototype defaults into plain data) cost about a tenth of the kernel thread's time per round to one
 * client, and more of each client's.
 *
 * Only codec.ts uses this module, and only as a fast path with the generic path as the reference:
 *
 * - encode: returns the bytes the generated encoder writes for the same object (same fields, same
 *   order, a field written exactly when it is set, as protobufjs does), or null when the object is
 *   anything but the common case (a bigint, a non-integer, a value out of its field's range, a
 *   non-ASCII string, a request id, another body): codec.ts then takes the generic path, which also
 *   owns every error;
 * - decode: returns the plain frame the generic decoder returns for the same bytes, or null when
 *   the bytes are anything but the common case (another body, an unknown field, an unexpected wire
 *   type, a varint of 2^53 or more, a repeated nested message, a non-ASCII string, a truncated
 *   frame): the generic decoder then decides, so malformed input gets the same DM_ERR_CHANNEL_MALFORMED.
 *
 * test/channel/hot-frames.test.ts checks both directions against the generated code over random and
 * edge-case messages.
 */
import { Buffer } from 'node:buffer';

/** Field numbers and wire types, from proto/devmirror/v1 (ServerFrame, ClientFrame, the messages). */
const FRAME_REQUEST_ID = 1;
const SERVER_INVALIDATE_START = 5;
const SERVER_INVALIDATE_END = 6;
const CLIENT_INVALIDATE_ACK = 5;
const ORIGIN_FIELD = 11;
const VARINT = 0;
const LEN = 2;
const TWO53 = 2 ** 53;

type Kind = 'u64' | 'u32' | 'i32' | 'bool';
/** A message's scalar fields by number, [name, kind], in the order the encoders write them. */
const START_FIELDS: Array<[string, Kind] | undefined> = [];
START_FIELDS[1] = ['invalidationId', 'u64'];
START_FIELDS[2] = ['subscriptionId', 'u64'];
START_FIELDS[3] = ['pid', 'u32'];
START_FIELDS[4] = ['start', 'u64'];
START_FIELDS[5] = ['end', 'u64'];
START_FIELDS[6] = ['event', 'i32'];
START_FIELDS[7] = ['flags', 'u32'];
START_FIELDS[8] = ['blockable', 'bool'];
START_FIELDS[9] = ['owner', 'u32'];
START_FIELDS[10] = ['curSeq', 'u64'];
/** InvalidateEnd: InvalidateStart's fields 1 to 7 (same numbers), then owner at 8. */
const END_FIELDS: Array<[string, Kind] | undefined> = START_FIELDS.slice(0, 8);
END_FIELDS[8] = ['owner', 'u32'];
const ACK_FIELDS: Array<[string, Kind] | undefined> = [];
ACK_FIELDS[1] = ['invalidationId', 'u64'];
ACK_FIELDS[2] = ['subscriptionId', 'u64'];
ACK_FIELDS[3] = ['result', 'i32'];
ACK_FIELDS[4] = ['keptReads', 'bool'];

// ---- encoding -------------------------------------------------------------------------------

/**
 * Scratch for one message body: an InvalidateStart is about 60 bytes, and at most about 600 with
 * the longest Origin this path takes (two strings of MAX_ASCII bytes, their tags and lengths, an
 * id). A typed array drops writes past its end silently, so both are sized above those bounds.
 */
const MAX_ASCII = 256;
const scratch = new Uint8Array(2048);
const originScratch = new Uint8Array(1024);

function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Writes a non-negative safe integer as a varint; returns the new position. */
function putVarint(buf: Uint8Array, pos: number, n: number): number {
  if (n > 0xffffffff) {
    // Above 32 bits (addresses): as two 32-bit halves with integer shifts (protobufjs's LongBits
    // does the same); by floating division and remainder, the two addresses of a start cost about a
    // third of its encoding.
    let lo = n >>> 0;
    let hi = (n - lo) / 4294967296;
    while (hi !== 0) {
      buf[pos++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    n = lo;
  }
  while (n > 0x7f) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  buf[pos++] = n;
  return pos;
}

/** The varint a scalar value is written as, or -1 where the generic encoder must decide. */
function scalar(v: unknown, kind: Kind): number {
  if (kind === 'bool') return typeof v === 'boolean' ? (v ? 1 : 0) : -1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) return -1;
  if (kind === 'u64') return v < TWO53 ? v : -1;
  if (kind === 'u32') return v <= 0xffffffff ? v : -1;
  return v <= 0x7fffffff ? v : -1;
}

/** Writes the set scalar fields of `m` in field order; -1 if one is not the common case. */
function putFields(buf: Uint8Array, pos: number, m: Record<string, unknown>, fields: Array<[string, Kind] | undefined>): number {
  for (let no = 1; no < fields.length; no++) {
    const f = fields[no]!;
    const v = m[f[0]];
    if (v == null) continue;
    const x = scalar(v, f[1]);
    if (x < 0) return -1;
    buf[pos++] = (no << 3) | VARINT;
    pos = putVarint(buf, pos, x);
  }
  return pos;
}

/** An ASCII string's bytes, written with its tag and length; -1 for anything else. */
function putAscii(buf: Uint8Array, pos: number, no: number, s: unknown): number {
  if (typeof s !== 'string' || s.length > MAX_ASCII) return -1;
  buf[pos++] = (no << 3) | LEN;
  pos = putVarint(buf, pos, s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return -1;
    buf[pos++] = c;
  }
  return pos;
}

function isPlain(o: unknown): o is Record<string, unknown> {
  return typeof o === 'object' && o !== null && Object.getPrototypeOf(o) === Object.prototype;
}

/** The Origin message's body into originScratch; its length, or -1. */
function putOrigin(o: unknown): number {
  if (!isPlain(o)) return -1;
  let pos = 0;
  if (o.operation != null) pos = putAscii(originScratch, pos, 1, o.operation);
  if (pos < 0) return -1;
  if (o.operationId != null) {
    const x = scalar(o.operationId, 'u64');
    if (x < 0) return -1;
    originScratch[pos++] = (2 << 3) | VARINT;
    pos = putVarint(originScratch, pos, x);
  }
  if (o.detail != null) pos = putAscii(originScratch, pos, 3, o.detail);
  return pos;
}

/**
 * The frame: body field `no` holding scratch[0, len). A Buffer from Node's pool, every byte written
 * below: `ws` sends a Buffer as it is, while a small Uint8Array (kept inside the JavaScript heap)
 * had to be moved to a backing store of its own for `ws` to view it as a Buffer, for every frame.
 */
function frame(no: number, len: number): Uint8Array {
  const out = Buffer.allocUnsafe(1 + varintSize(len) + len);
  out[0] = (no << 3) | LEN;
  const at = putVarint(out, 1, len);
  // A loop, not set(subarray): a round's bodies are under a hundred bytes, and the subarray is a
  // typed array allocated per frame.
  for (let i = 0; i < len; i++) out[at + i] = scratch[i];
  return out;
}

/** The one body key of a frame object without a request id, or null. */
function onlyBody(f: Record<string, unknown>): string | null {
  let body: string | null = null;
  for (const k in f) {
    if (!Object.prototype.hasOwnProperty.call(f, k)) return null;
    if (f[k] == null) continue;
    if (body !== null) return null;
    body = k;
  }
  return body;
}

/** The Origin field (tag, length, originScratch[0, olen)) at `pos` in scratch; the position after it. */
function putOriginField(pos: number, olen: number): number {
  scratch[pos++] = (ORIGIN_FIELD << 3) | LEN;
  pos = putVarint(scratch, pos, olen);
  // A loop, not set(subarray): the subarray is a typed array allocated per frame (see frame).
  for (let i = 0; i < olen; i++) scratch[pos + i] = originScratch[i];
  return pos + olen;
}

/** A ServerFrame carrying InvalidateStart or InvalidateEnd, or null (take the generic path). */
export function encodeHotServerFrame(f: unknown): Uint8Array | null {
  if (!isPlain(f)) return null;
  const body = onlyBody(f);
  if (body === 'invalidateStart') {
    const m = f.invalidateStart;
    if (!isPlain(m)) return null;
    let pos = putFields(scratch, 0, m, START_FIELDS);
    if (pos < 0) return null;
    if (m.origin != null) {
      const olen = putOrigin(m.origin);
      if (olen < 0) return null;
      pos = putOriginField(pos, olen);
    }
    return frame(SERVER_INVALIDATE_START, pos);
  }
  if (body === 'invalidateEnd') {
    const m = f.invalidateEnd;
    if (!isPlain(m)) return null;
    const pos = putFields(scratch, 0, m, END_FIELDS);
    return pos < 0 ? null : frame(SERVER_INVALIDATE_END, pos);
  }
  return null;
}

/** One scalar field (tag and varint) of a flat encoder below; -1 once a value is out of range. */
function putScalar(pos: number, no: number, v: number, kind: Kind): number {
  if (pos < 0) return -1;
  const x = scalar(v, kind);
  if (x < 0) return -1;
  scratch[pos++] = (no << 3) | VARINT;
  return putVarint(scratch, pos, x);
}

/** Fields 1 to 7, which InvalidateStart and InvalidateEnd share (same numbers), from scratch[0]; -1 if one is out of range. */
function putRangeFields(invalidationId: number, subscriptionId: number, pid: number, start: number, end: number, event: number, flags: number): number {
  let pos = putScalar(0, 1, invalidationId, 'u64');
  pos = putScalar(pos, 2, subscriptionId, 'u64');
  pos = putScalar(pos, 3, pid, 'u32');
  pos = putScalar(pos, 4, start, 'u64');
  pos = putScalar(pos, 5, end, 'u64');
  pos = putScalar(pos, 6, event, 'i32');
  return putScalar(pos, 7, flags, 'u32');
}

/**
 * The InvalidateStart frame from its fields, for the session (one per client and round): the bytes
 * encodeHotServerFrame writes for `{ invalidateStart: { invalidationId, subscriptionId, pid, start,
 * end, event, flags, blockable: (flags & 1) !== 0, owner, curSeq, origin: { operation } } }`
 * (owner left out when null), without building that object and walking it. Null where that one
 * declines (a value out of its field's range, a non-ASCII or long operation): the caller then takes
 * the generic path with the object.
 */
export function encodeStartFields(
  invalidationId: number,
  subscriptionId: number,
  pid: number,
  start: number,
  end: number,
  event: number,
  flags: number,
  owner: number | null,
  curSeq: number,
  operation: string | null,
): Uint8Array | null {
  let pos = putRangeFields(invalidationId, subscriptionId, pid, start, end, event, flags);
  if (pos < 0) return null;
  scratch[pos++] = (8 << 3) | VARINT;
  scratch[pos++] = (flags & 1) !== 0 ? 1 : 0;
  if (owner !== null) pos = putScalar(pos, 9, owner, 'u32');
  pos = putScalar(pos, 10, curSeq, 'u64');
  if (pos < 0) return null;
  const olen = operation == null ? 0 : putAscii(originScratch, 0, 1, operation);
  if (olen < 0) return null;
  return frame(SERVER_INVALIDATE_START, putOriginField(pos, olen));
}

/** The InvalidateEnd frame from its fields (see encodeStartFields): fields 1 to 7, then owner when set. */
export function encodeEndFields(
  invalidationId: number,
  subscriptionId: number,
  pid: number,
  start: number,
  end: number,
  event: number,
  flags: number,
  owner: number | null,
): Uint8Array | null {
  let pos = putRangeFields(invalidationId, subscriptionId, pid, start, end, event, flags);
  if (owner !== null) pos = putScalar(pos, 8, owner, 'u32');
  return pos < 0 ? null : frame(SERVER_INVALIDATE_END, pos);
}

/**
 * The InvalidateAck frame from its fields, for a client (one per round): the bytes
 * encodeHotClientFrame writes for `{ invalidateAck: { invalidationId, subscriptionId, result,
 * keptReads: true } }`, or without keptReads when it is false (the client leaves the key out then);
 * null where that one declines.
 */
export function encodeAckFields(invalidationId: number, subscriptionId: number, result: number, keptReads: boolean): Uint8Array | null {
  let pos = putScalar(0, 1, invalidationId, 'u64');
  pos = putScalar(pos, 2, subscriptionId, 'u64');
  pos = putScalar(pos, 3, result, 'i32');
  if (pos < 0) return null;
  if (keptReads) {
    scratch[pos++] = (4 << 3) | VARINT;
    scratch[pos++] = 1;
  }
  return frame(CLIENT_INVALIDATE_ACK, pos);
}

/** A ClientFrame carrying InvalidateAck, or null (take the generic path). */
export function encodeHotClientFrame(f: unknown): Uint8Array | null {
  if (!isPlain(f) || onlyBody(f) !== 'invalidateAck') return null;
  const m = f.invalidateAck;
  if (!isPlain(m)) return null;
  const pos = putFields(scratch, 0, m, ACK_FIELDS);
  return pos < 0 ? null : frame(CLIENT_INVALIDATE_ACK, pos);
}

// ---- decoding -------------------------------------------------------------------------------
//
// One reader per message, each building its object with one literal (every object of a message
// then has the same shape) and dispatching on the whole tag. A generic reader that stored fields by
// computed name went through V8's megamorphic keyed stores, which with the cursor object and the
// field tables made decoding a round's two frames about 0.6 us of each client's CPU (11-28). The
// reader's state is module-level: decoding is synchronous and calls out to nothing, so no two
// decodes interleave. `rbuf` keeps the last frame read until the next decode (at most one frame,
// bounded by the channel's maxPayload).

let rbuf: Uint8Array = scratch;
let rpos = 0;
/** Set at the first thing the fast path does not take; the generic decoder then decides. */
let rbad = false;

/** A varint below 2^53 (at most 8 bytes), else sets `rbad`. */
function varint(): number {
  const buf = rbuf;
  // One byte: every tag here, and most values (pids, events, flags, small ids).
  if (rpos < buf.length && buf[rpos] < 0x80) return buf[rpos++];
  let v = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    if (rpos >= buf.length) break;
    const b = buf[rpos++];
    v += (b & 0x7f) * mul;
    if (b < 0x80) {
      if (v >= TWO53) break;
      return v;
    }
    mul *= 128;
  }
  rbad = true;
  return 0;
}

/** A u32 field's value (range-checked). */
function u32(): number {
  const v = varint();
  if (v > 0xffffffff) rbad = true;
  return v;
}

/** An int32 field's value: non-negative only (a negative one is ten bytes, which varint declines). */
function i32(): number {
  const v = varint();
  if (v > 0x7fffffff) rbad = true;
  return v;
}

/**
 * The last string read of each length below 32: an Origin's operation names come from a small set
 * and repeat from frame to frame, and comparing bytes costs less than building the string a
 * character at a time.
 */
const asciiSeen: Array<string | null> = new Array<string | null>(32).fill(null);

function readAscii(end: number): string {
  const len = varint();
  if (rbad || rpos + len > end) {
    rbad = true;
    return '';
  }
  const seen = len < 32 ? asciiSeen[len] : null;
  if (seen != null) {
    let i = 0;
    while (i < len && rbuf[rpos + i] === seen.charCodeAt(i)) i++;
    if (i === len) {
      rpos += len;
      return seen;
    }
  }
  let s = '';
  for (let i = rpos; i < rpos + len; i++) {
    const b = rbuf[i];
    if (b >= 0x80) {
      rbad = true;
      return '';
    }
    s += String.fromCharCode(b);
  }
  rpos += len;
  if (len < 32) asciiSeen[len] = s;
  return s;
}

/** The Origin message in [rpos, end), into startOut (operation, operationId, detail). */
function readOrigin(end: number): void {
  const o = startOut;
  while (!rbad && rpos < end) {
    switch (varint()) {
      case (1 << 3) | LEN:
        o.operation = readAscii(end);
        break;
      case (2 << 3) | VARINT:
        o.operationId = varint();
        break;
      case (3 << 3) | LEN:
        o.detail = readAscii(end);
        break;
      default:
        rbad = true;
    }
  }
  if (rpos !== end) rbad = true;
}

/**
 * Fields 1 to 7, which InvalidateStart and InvalidateEnd share (same numbers): reads the one `tag`
 * names into `m`; false for any other tag.
 */
function readRangeField(tag: number, m: RangeFields): boolean {
  switch (tag) {
    case (1 << 3) | VARINT:
      m.invalidationId = varint();
      return true;
    case (2 << 3) | VARINT:
      m.subscriptionId = varint();
      return true;
    case (3 << 3) | VARINT:
      m.pid = u32();
      return true;
    case (4 << 3) | VARINT:
      m.start = varint();
      return true;
    case (5 << 3) | VARINT:
      m.end = varint();
      return true;
    case (6 << 3) | VARINT:
      m.event = i32();
      return true;
    case (7 << 3) | VARINT:
      m.flags = u32();
      return true;
    default:
      return false;
  }
}

/** InvalidateStart's and InvalidateEnd's fields 1 to 7. */
interface RangeFields {
  invalidationId: number;
  subscriptionId: number;
  pid: number;
  start: number;
  end: number;
  event: number;
  flags: number;
}

/** An InvalidateStart's fields, read in place (see decodeStartFields). */
export interface StartFields extends RangeFields {
  requestId: number;
  blockable: boolean;
  /** null when the frame carries none (proto3 optional). */
  owner: number | null;
  curSeq: number;
  /** Whether the frame carries an Origin; its fields are '' and 0 when it does not. */
  hasOrigin: boolean;
  operation: string;
  operationId: number;
  detail: string;
}

/** decodeStartFields' result: one object, overwritten by the next call. */
const startOut: StartFields = { requestId: 0, invalidationId: 0, subscriptionId: 0, pid: 0, start: 0, end: 0, event: 0, flags: 0, blockable: false, owner: null, curSeq: 0, hasOrigin: false, operation: '', operationId: 0, detail: '' };

/** InvalidateStart in [rpos, end), into startOut. */
function readStartFields(end: number): void {
  const m = startOut;
  m.invalidationId = m.subscriptionId = m.pid = m.start = m.end = m.event = m.flags = m.curSeq = m.operationId = 0;
  m.blockable = m.hasOrigin = false;
  m.owner = null;
  m.operation = m.detail = '';
  while (!rbad && rpos < end) {
    const tag = varint();
    if (readRangeField(tag, m)) continue;
    switch (tag) {
      case (8 << 3) | VARINT:
        m.blockable = varint() !== 0;
        break;
      case (9 << 3) | VARINT:
        m.owner = u32();
        break;
      case (10 << 3) | VARINT:
        m.curSeq = varint();
        break;
      case (ORIGIN_FIELD << 3) | LEN: {
        // A repeated nested message is merged by protobuf: the generic decoder's business.
        if (m.hasOrigin) {
          rbad = true;
          break;
        }
        m.hasOrigin = true;
        const len = varint();
        if (rbad || rpos + len > end) {
          rbad = true;
          break;
        }
        readOrigin(rpos + len);
        break;
      }
      default:
        rbad = true;
    }
  }
  if (rpos !== end) rbad = true;
}

/** InvalidateStart in [rpos, end) as the generic decoder returns it: `owner` and `origin` only when sent. */
function readStart(end: number): Record<string, unknown> {
  readStartFields(end);
  const f = startOut;
  const m: Record<string, unknown> = { invalidationId: f.invalidationId, subscriptionId: f.subscriptionId, pid: f.pid, start: f.start, end: f.end, event: f.event, flags: f.flags, blockable: f.blockable, curSeq: f.curSeq };
  if (f.owner !== null) m.owner = f.owner;
  if (f.hasOrigin) m.origin = { operation: f.operation, operationId: f.operationId, detail: f.detail };
  return m;
}

/** InvalidateEnd in [rpos, end): InvalidateStart's fields 1 to 7, then owner at 8 (only when sent). */
function readEnd(end: number): RangeFields & { owner?: number } {
  const m: RangeFields & { owner?: number } = { invalidationId: 0, subscriptionId: 0, pid: 0, start: 0, end: 0, event: 0, flags: 0 };
  while (!rbad && rpos < end) {
    const tag = varint();
    if (readRangeField(tag, m)) continue;
    if (tag === ((8 << 3) | VARINT)) m.owner = u32();
    else rbad = true;
  }
  if (rpos !== end) rbad = true;
  return m;
}

/** An InvalidateAck's fields, read in place (see decodeAckFields). */
export interface AckFields {
  requestId: number;
  invalidationId: number;
  subscriptionId: number;
  result: number;
  keptReads: boolean;
}

/** decodeAckFields' result: one object, overwritten by the next call. */
const ackOut: AckFields = { requestId: 0, invalidationId: 0, subscriptionId: 0, result: 0, keptReads: false };

/** InvalidateAck in [rpos, end), into ackOut. */
function readAck(end: number): void {
  ackOut.invalidationId = 0;
  ackOut.subscriptionId = 0;
  ackOut.result = 0;
  ackOut.keptReads = false;
  while (!rbad && rpos < end) {
    switch (varint()) {
      case (1 << 3) | VARINT:
        ackOut.invalidationId = varint();
        break;
      case (2 << 3) | VARINT:
        ackOut.subscriptionId = varint();
        break;
      case (3 << 3) | VARINT:
        ackOut.result = i32();
        break;
      case (4 << 3) | VARINT:
        ackOut.keptReads = varint() !== 0;
        break;
      default:
        rbad = true;
    }
  }
  if (rpos !== end) rbad = true;
}

/** What frameBody found: where the body ends, and the frame's request id. */
let bodyEnd = 0;
let frameRequestId = 0;

/**
 * Walks a frame: the request id and exactly one body field, whose number must be `a` or `b`.
 * Returns the body's number with rpos at its first byte (bodyEnd, frameRequestId set), or 0 when the
 * frame is anything else.
 */
function frameBody(buf: Uint8Array, a: number, b: number): number {
  rbuf = buf;
  rpos = 0;
  rbad = false;
  frameRequestId = 0;
  let body = 0;
  let start = 0;
  while (!rbad && rpos < buf.length) {
    const tag = varint();
    if (tag === ((FRAME_REQUEST_ID << 3) | VARINT)) {
      frameRequestId = varint();
      continue;
    }
    const no = tag >>> 3;
    if ((no !== a && no !== b) || (tag & 7) !== LEN || body !== 0) return 0;
    const len = varint();
    if (rbad || rpos + len > buf.length) return 0;
    body = no;
    start = rpos;
    bodyEnd = rpos + len;
    rpos = bodyEnd;
  }
  if (rbad || body === 0) return 0;
  // The body is read after the frame: a request id may follow it on the wire.
  rpos = start;
  return body;
}

/** A ServerFrame carrying InvalidateStart or InvalidateEnd, as codec.ts decodes it; else null. */
export function decodeHotServerFrame(buf: Uint8Array): Record<string, unknown> | null {
  const no = frameBody(buf, SERVER_INVALIDATE_START, SERVER_INVALIDATE_END);
  if (no === 0) return null;
  const requestId = frameRequestId;
  if (no === SERVER_INVALIDATE_START) {
    const m = readStart(bodyEnd);
    return rbad ? null : { requestId, body: 'invalidateStart', invalidateStart: m };
  }
  const m = readEnd(bodyEnd);
  return rbad ? null : { requestId, body: 'invalidateEnd', invalidateEnd: m };
}

/**
 * A ServerFrame carrying InvalidateStart, read into a shared object that the next call overwrites
 * (a client's path: one per round, handed on at once, with no frame object and no Origin object);
 * null where decodeHotServerFrame declines, and for any other body.
 */
export function decodeStartFields(buf: Uint8Array): StartFields | null {
  if (frameBody(buf, SERVER_INVALIDATE_START, SERVER_INVALIDATE_START) === 0) return null;
  const requestId = frameRequestId;
  readStartFields(bodyEnd);
  if (rbad) return null;
  startOut.requestId = requestId;
  return startOut;
}

/**
 * A ClientFrame carrying InvalidateAck, read into a shared object that the next call overwrites
 * (the session's path: it hands the fields on at once); null where decodeHotClientFrame declines.
 */
export function decodeAckFields(buf: Uint8Array): AckFields | null {
  if (frameBody(buf, CLIENT_INVALIDATE_ACK, CLIENT_INVALIDATE_ACK) === 0) return null;
  ackOut.requestId = frameRequestId;
  readAck(bodyEnd);
  return rbad ? null : ackOut;
}

/** A ClientFrame carrying InvalidateAck, as codec.ts decodes it; else null. */
export function decodeHotClientFrame(buf: Uint8Array): Record<string, unknown> | null {
  const a = decodeAckFields(buf);
  if (a === null) return null;
  return { requestId: a.requestId, body: 'invalidateAck', invalidateAck: { invalidationId: a.invalidationId, subscriptionId: a.subscriptionId, result: a.result, keptReads: a.keptReads } };
}
