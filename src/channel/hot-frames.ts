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
/** A message's scalar fields by number: [name, kind]; proto3 `optional` fields are marked. */
const START_FIELDS: Array<[string, Kind, boolean] | undefined> = [];
START_FIELDS[1] = ['invalidationId', 'u64', false];
START_FIELDS[2] = ['subscriptionId', 'u64', false];
START_FIELDS[3] = ['pid', 'u32', false];
START_FIELDS[4] = ['start', 'u64', false];
START_FIELDS[5] = ['end', 'u64', false];
START_FIELDS[6] = ['event', 'i32', false];
START_FIELDS[7] = ['flags', 'u32', false];
START_FIELDS[8] = ['blockable', 'bool', false];
START_FIELDS[9] = ['owner', 'u32', true];
START_FIELDS[10] = ['curSeq', 'u64', false];
/** InvalidateEnd: InvalidateStart's fields 1 to 7 (same numbers), then owner at 8. */
const END_FIELDS: Array<[string, Kind, boolean] | undefined> = START_FIELDS.slice(0, 8);
END_FIELDS[8] = ['owner', 'u32', true];
const ACK_FIELDS: Array<[string, Kind, boolean] | undefined> = [];
ACK_FIELDS[1] = ['invalidationId', 'u64', false];
ACK_FIELDS[2] = ['subscriptionId', 'u64', false];
ACK_FIELDS[3] = ['result', 'i32', false];
ACK_FIELDS[4] = ['keptReads', 'bool', false];
const ORIGIN_FIELDS = { 1: 'operation', 2: 'operationId', 3: 'detail' } as const;

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
  while (n >= 0x80) {
    buf[pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
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
function putFields(buf: Uint8Array, pos: number, m: Record<string, unknown>, fields: Array<[string, Kind, boolean] | undefined>): number {
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
  out.set(scratch.subarray(0, len), at);
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
  scratch.set(originScratch.subarray(0, olen), pos);
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

/** A ClientFrame carrying InvalidateAck, or null (take the generic path). */
export function encodeHotClientFrame(f: unknown): Uint8Array | null {
  if (!isPlain(f) || onlyBody(f) !== 'invalidateAck') return null;
  const m = f.invalidateAck;
  if (!isPlain(m)) return null;
  const pos = putFields(scratch, 0, m, ACK_FIELDS);
  return pos < 0 ? null : frame(CLIENT_INVALIDATE_ACK, pos);
}

// ---- decoding -------------------------------------------------------------------------------

/** A cursor over the frame; `bad` is set at the first thing the fast path does not take. */
class Cursor {
  pos = 0;
  bad = false;
  constructor(readonly buf: Uint8Array) {}

  /** A varint below 2^53 (at most 8 bytes), else sets `bad`. */
  varint(): number {
    const buf = this.buf;
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= buf.length) break;
      const b = buf[this.pos++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (v >= TWO53) break;
        return v;
      }
      mul *= 128;
    }
    this.bad = true;
    return 0;
  }
}

function readAscii(c: Cursor, end: number): string {
  const len = c.varint();
  if (c.bad || c.pos + len > end) {
    c.bad = true;
    return '';
  }
  let s = '';
  for (let i = c.pos; i < c.pos + len; i++) {
    const b = c.buf[i];
    if (b >= 0x80) {
      c.bad = true;
      return '';
    }
    s += String.fromCharCode(b);
  }
  c.pos += len;
  return s;
}

function readOrigin(c: Cursor, end: number): Record<string, unknown> {
  const o: Record<string, unknown> = { operation: '', operationId: 0, detail: '' };
  while (!c.bad && c.pos < end) {
    const tag = c.varint();
    const no = tag >>> 3;
    const wt = tag & 7;
    const name = ORIGIN_FIELDS[no as 1 | 2 | 3];
    if (name === undefined || (no === 2 ? wt !== VARINT : wt !== LEN)) c.bad = true;
    else if (no === 2) o.operationId = c.varint();
    else o[name] = readAscii(c, end);
  }
  if (c.pos !== end) c.bad = true;
  return o;
}

/** A message of scalar fields (plus Origin for InvalidateStart) in [c.pos, end). */
function readMessage(c: Cursor, end: number, fields: Array<[string, Kind, boolean] | undefined>, withOrigin: boolean): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  for (let no = 1; no < fields.length; no++) {
    const f = fields[no]!;
    if (!f[2]) m[f[0]] = f[1] === 'bool' ? false : 0;
  }
  let sawOrigin = false;
  while (!c.bad && c.pos < end) {
    const tag = c.varint();
    const no = tag >>> 3;
    const wt = tag & 7;
    if (withOrigin && no === ORIGIN_FIELD && wt === LEN && !sawOrigin) {
      sawOrigin = true;
      const len = c.varint();
      if (c.bad || c.pos + len > end) {
        c.bad = true;
        break;
      }
      m.origin = readOrigin(c, c.pos + len);
      continue;
    }
    const f = fields[no];
    if (f === undefined || wt !== VARINT) {
      c.bad = true;
      break;
    }
    const v = c.varint();
    if (f[1] === 'bool') m[f[0]] = v !== 0;
    else if (f[1] === 'u64') m[f[0]] = v;
    else if (v > (f[1] === 'u32' ? 0xffffffff : 0x7fffffff)) c.bad = true;
    else m[f[0]] = v;
  }
  if (c.pos !== end) c.bad = true;
  return m;
}

/**
 * Reads a frame whose body is one of `bodies` (field number -> [name, fields, has Origin]); the plain
 * frame, or null.
 */
function decodeHot(buf: Uint8Array, bodies: Record<number, [string, Array<[string, Kind, boolean] | undefined>, boolean]>): Record<string, unknown> | null {
  const c = new Cursor(buf);
  let requestId = 0;
  let body: string | null = null;
  let msg: Record<string, unknown> | null = null;
  while (!c.bad && c.pos < buf.length) {
    const tag = c.varint();
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no === FRAME_REQUEST_ID && wt === VARINT) {
      requestId = c.varint();
      continue;
    }
    const b = bodies[no];
    if (b === undefined || wt !== LEN || body !== null) return null;
    const len = c.varint();
    if (c.bad || c.pos + len > buf.length) return null;
    body = b[0];
    msg = readMessage(c, c.pos + len, b[1], b[2]);
  }
  if (c.bad || body === null) return null;
  return { requestId, body, [body]: msg };
}

const SERVER_BODIES: Record<number, [string, Array<[string, Kind, boolean] | undefined>, boolean]> = {
  [SERVER_INVALIDATE_START]: ['invalidateStart', START_FIELDS, true],
  [SERVER_INVALIDATE_END]: ['invalidateEnd', END_FIELDS, false],
};
const CLIENT_BODIES: Record<number, [string, Array<[string, Kind, boolean] | undefined>, boolean]> = {
  [CLIENT_INVALIDATE_ACK]: ['invalidateAck', ACK_FIELDS, false],
};

/** A ServerFrame carrying InvalidateStart or InvalidateEnd, as codec.ts decodes it; else null. */
export function decodeHotServerFrame(buf: Uint8Array): Record<string, unknown> | null {
  return decodeHot(buf, SERVER_BODIES);
}

/** A ClientFrame carrying InvalidateAck, as codec.ts decodes it; else null. */
export function decodeHotClientFrame(buf: Uint8Array): Record<string, unknown> | null {
  return decodeHot(buf, CLIENT_BODIES);
}
