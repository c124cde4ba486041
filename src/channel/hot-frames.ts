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
const U32_MAX = 0xffffffff;
const I32_MAX = 0x7fffffff;

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
  if (n > 0xfffffff) {
    // Past 28 bits (addresses, 48 bits): the low 28 as four bytes, then the rest (below 2^25) in
    // integer shifts. Division by 2^28 and floor are exact on a safe integer; halves of 32 bits
    // shifted across each other cost the two addresses of a start about 17 ns more (11-29).
    const hi = Math.floor(n / 268435456);
    const lo = n - hi * 268435456;
    buf[pos++] = (lo & 0x7f) | 0x80;
    buf[pos++] = ((lo >>> 7) & 0x7f) | 0x80;
    buf[pos++] = ((lo >>> 14) & 0x7f) | 0x80;
    buf[pos++] = ((lo >>> 21) & 0x7f) | 0x80;
    n = hi;
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
  if (typeof v !== 'number') return -1;
  return (kind === 'u64' ? isU64(v) : kind === 'u32' ? isU32(v) : isI32(v)) ? v : -1;
}

function isU64(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v < TWO53;
}
function isU32(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= U32_MAX;
}
/** int32, non-negative only: a negative one is written in ten bytes, the generic encoder's business. */
function isI32(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= I32_MAX;
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

// The flat encoders (a round's frames from their fields) check every value first, then write the
// body into scratch from BODY_AT, the frame's tag and body length just before it, and copy the frame
// once into its Buffer: 220 ns a start before, with a range check and a kind dispatch per field, an
// Origin written apart and copied in, and the body copied after its header
// (bench/experiments/codec-cold.mjs, 11-29).

/** Where a flat encoder's body starts in scratch: room before it for the frame's tag and a body length of up to two bytes. */
const BODY_AT = 3;

/** A flat encoder's scalar fields, in order: tag byte i and its value i (written by putTagged). */
const fTag = new Uint8Array(16);
const fVal = new Float64Array(16);

/**
 * Writes fields [0, count) of fTag and fVal into scratch from pos, each a tag byte and a varint;
 * returns the position after them. One loop, so one putVarint call site: as nine calls, the start
 * encoder ran past V8's inlining budget and made a call per field.
 */
function putTagged(pos: number, count: number): number {
  const b = scratch;
  for (let i = 0; i < count; i++) {
    b[pos++] = fTag[i];
    pos = putVarint(b, pos, fVal[i]);
  }
  return pos;
}

/** Fields 1 to 7, which InvalidateStart and InvalidateEnd share (same numbers), into fTag and fVal [0, 7); false if one is out of range. */
function putRange(invalidationId: number, subscriptionId: number, pid: number, start: number, end: number, event: number, flags: number): boolean {
  if (!(isU64(invalidationId) && isU64(subscriptionId) && isU32(pid) && isU64(start) && isU64(end) && isI32(event) && isU32(flags))) return false;
  fVal[0] = invalidationId;
  fVal[1] = subscriptionId;
  fVal[2] = pid;
  fVal[3] = start;
  fVal[4] = end;
  fVal[5] = event;
  fVal[6] = flags;
  return true;
}
for (let i = 0; i < 7; i++) fTag[i] = ((i + 1) << 3) | VARINT;

/** The frame of a flat encoder's body, scratch[BODY_AT, pos), as body field `no`: a Buffer of its own (see frame). */
function flatFrame(no: number, pos: number): Uint8Array {
  const len = pos - BODY_AT;
  const at = BODY_AT - 1 - varintSize(len);
  scratch[at] = (no << 3) | LEN;
  putVarint(scratch, at + 1, len);
  const out = Buffer.allocUnsafe(pos - at);
  for (let i = 0; i < out.length; i++) out[i] = scratch[at + i];
  return out;
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
  if ((owner !== null && !isU32(owner)) || !isU64(curSeq) || !putRange(invalidationId, subscriptionId, pid, start, end, event, flags)) return null;
  let count = 7;
  fTag[count] = (8 << 3) | VARINT;
  fVal[count++] = flags & 1;
  if (owner !== null) {
    fTag[count] = (9 << 3) | VARINT;
    fVal[count++] = owner;
  }
  fTag[count] = (10 << 3) | VARINT;
  fVal[count++] = curSeq;
  // An Origin always, empty without an operation (the object above carries `origin: {}` then);
  // with one, its body is the operation's tag, length and bytes. Tags and lengths go through
  // putTagged with the scalars (a length is a varint after its tag too).
  fTag[count] = (ORIGIN_FIELD << 3) | LEN;
  if (operation == null) {
    fVal[count++] = 0;
    return flatFrame(SERVER_INVALIDATE_START, putTagged(BODY_AT, count));
  }
  if (typeof operation !== 'string' || operation.length > MAX_ASCII) return null;
  const n = operation.length;
  fVal[count++] = 1 + varintSize(n) + n;
  fTag[count] = (1 << 3) | LEN;
  fVal[count++] = n;
  let pos = putTagged(BODY_AT, count);
  const b = scratch;
  for (let i = 0; i < n; i++) {
    const c = operation.charCodeAt(i);
    if (c >= 0x80) return null;
    b[pos++] = c;
  }
  return flatFrame(SERVER_INVALIDATE_START, pos);
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
  if ((owner !== null && !isU32(owner)) || !putRange(invalidationId, subscriptionId, pid, start, end, event, flags)) return null;
  let count = 7;
  if (owner !== null) {
    fTag[count] = (8 << 3) | VARINT;
    fVal[count++] = owner;
  }
  return flatFrame(SERVER_INVALIDATE_END, putTagged(BODY_AT, count));
}

/**
 * The InvalidateAck frame from its fields, for a client (one per round): the bytes
 * encodeHotClientFrame writes for `{ invalidateAck: { invalidationId, subscriptionId, result,
 * keptReads: true } }`, or without keptReads when it is false (the client leaves the key out then);
 * null where that one declines.
 */
export function encodeAckFields(invalidationId: number, subscriptionId: number, result: number, keptReads: boolean): Uint8Array | null {
  if (!(isU64(invalidationId) && isU64(subscriptionId) && isI32(result))) return null;
  // Fields 1 to 3 have the range fields' tags (fTag[0, 3) is fixed).
  fVal[0] = invalidationId;
  fVal[1] = subscriptionId;
  fVal[2] = result;
  let pos = putTagged(BODY_AT, 3);
  if (keptReads) {
    scratch[pos++] = (4 << 3) | VARINT;
    scratch[pos++] = 1;
  }
  return flatFrame(CLIENT_INVALIDATE_ACK, pos);
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
// One reader per message, each keeping its position in a local and dispatching on the whole tag
// byte (every tag here is one byte; a longer one, canonical or not, is declined). Every field of
// these messages is a tag and a varint (the value, or a length), so a reader reads the varint
// before it dispatches: one byte inline, longer ones in varintAt. (The same five lines open each
// reader's loop: a shared fieldAt returning the tag through a module variable cost a start 15 ns
// and an ack 7 ns more, 11-29.) A first reader kept its position,
// buffer and error flag in module variables and called a function per varint: 160 ns for a start
// frame, against 60 ns for a reader of this form (bench/experiments/codec-cold.mjs, 11-29); one
// before it, storing fields by computed name through V8's megamorphic keyed stores, cost about
// 0.6 us of each client's CPU a round (11-28). The readers call out to nothing, so the module
// variables they share (vpos, the body's bounds, the shared result objects) never interleave.

/** 128^i, for varint bytes past the fourth (beyond 32-bit integer arithmetic). */
const POW128 = [1, 128, 16384, 2097152, 268435456, 34359738368, 4398046511104, 562949953421312];
/** Where varintAt stopped: the position after the varint it read. */
let vpos = 0;

/** The varint at buf[pos] if it is below 2^53 and at most 8 bytes (vpos set after it), else -1. */
function varintAt(buf: Uint8Array, pos: number): number {
  const n = buf.length;
  let v = 0;
  // The first four bytes (28 bits) in integer arithmetic: ids, lengths, sequence numbers.
  for (let shift = 0; shift < 28; shift += 7) {
    if (pos >= n) return -1;
    const b = buf[pos++];
    v |= (b & 0x7f) << shift;
    if (b < 0x80) {
      vpos = pos;
      return v;
    }
  }
  // Up to four more (addresses), in floating point: 2^53 needs 8 bytes.
  for (let i = 4; i < 8; i++) {
    if (pos >= n) return -1;
    const b = buf[pos++];
    v += (b & 0x7f) * POW128[i];
    if (b < 0x80) {
      vpos = pos;
      return v < TWO53 ? v : -1;
    }
  }
  return -1;
}

/**
 * The last string read of each length below 32: an Origin's operation names come from a small set
 * and repeat from frame to frame, and comparing bytes costs less than building the string a
 * character at a time.
 */
const asciiSeen: Array<string | null> = new Array<string | null>(32).fill(null);

/** The ASCII string in buf[pos, pos + len), or null for any other byte. */
function asciiAt(buf: Uint8Array, pos: number, len: number): string | null {
  const seen = len < 32 ? asciiSeen[len] : null;
  if (seen != null) {
    let i = 0;
    while (i < len && buf[pos + i] === seen.charCodeAt(i)) i++;
    if (i === len) return seen;
  }
  let s = '';
  for (let i = pos; i < pos + len; i++) {
    const b = buf[i];
    if (b >= 0x80) return null;
    s += String.fromCharCode(b);
  }
  if (len < 32) asciiSeen[len] = s;
  return s;
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
/** readEnd's result, the same way. */
const endOut: RangeFields & { owner: number | null } = { invalidationId: 0, subscriptionId: 0, pid: 0, start: 0, end: 0, event: 0, flags: 0, owner: null };

/**
 * Fields 1 to 7, which InvalidateStart and InvalidateEnd share (same numbers): stores field `tag`'s
 * varint `v` into `m`. 1 when stored, 0 for another tag, -1 for a value out of its field's range.
 */
function rangeField(m: RangeFields, tag: number, v: number): number {
  switch (tag) {
    case (1 << 3) | VARINT:
      m.invalidationId = v;
      return 1;
    case (2 << 3) | VARINT:
      m.subscriptionId = v;
      return 1;
    case (3 << 3) | VARINT:
      if (v > U32_MAX) return -1;
      m.pid = v;
      return 1;
    case (4 << 3) | VARINT:
      m.start = v;
      return 1;
    case (5 << 3) | VARINT:
      m.end = v;
      return 1;
    case (6 << 3) | VARINT:
      // int32: a negative value is ten bytes, which varintAt declines.
      if (v > I32_MAX) return -1;
      m.event = v;
      return 1;
    case (7 << 3) | VARINT:
      if (v > U32_MAX) return -1;
      m.flags = v;
      return 1;
    default:
      return 0;
  }
}

/** The Origin message in buf[pos, end), into startOut (operation, operationId, detail). */
function readOrigin(buf: Uint8Array, pos: number, end: number): boolean {
  const o = startOut;
  while (pos < end) {
    const tag = buf[pos++];
    let v = buf[pos];
    if (v < 0x80) pos++;
    else if ((v = varintAt(buf, pos)) < 0) return false;
    else pos = vpos;
    if (tag === ((2 << 3) | VARINT)) {
      o.operationId = v;
      continue;
    }
    if ((tag !== ((1 << 3) | LEN) && tag !== ((3 << 3) | LEN)) || pos + v > end) return false;
    const str = asciiAt(buf, pos, v);
    if (str === null) return false;
    if (tag === ((1 << 3) | LEN)) o.operation = str;
    else o.detail = str;
    pos += v;
  }
  return pos === end;
}

/** InvalidateStart in buf[pos, end), into startOut; false for anything the generic decoder must decide. */
function readStartFields(buf: Uint8Array, pos: number, end: number): boolean {
  const m = startOut;
  m.invalidationId = m.subscriptionId = m.pid = m.start = m.end = m.event = m.flags = m.curSeq = m.operationId = 0;
  m.blockable = m.hasOrigin = false;
  m.owner = null;
  m.operation = m.detail = '';
  while (pos < end) {
    const tag = buf[pos++];
    let v = buf[pos];
    if (v < 0x80) pos++;
    else if ((v = varintAt(buf, pos)) < 0) return false;
    else pos = vpos;
    const r = rangeField(m, tag, v);
    if (r > 0) continue;
    if (r < 0) return false;
    switch (tag) {
      case (8 << 3) | VARINT:
        // protobufjs reads a bool as a uint32: past 32 bits it would wrap, so those are declined.
        if (v > U32_MAX) return false;
        m.blockable = v !== 0;
        break;
      case (9 << 3) | VARINT:
        if (v > U32_MAX) return false;
        m.owner = v;
        break;
      case (10 << 3) | VARINT:
        m.curSeq = v;
        break;
      case (ORIGIN_FIELD << 3) | LEN:
        // A repeated nested message is merged by protobuf: the generic decoder's business.
        if (m.hasOrigin || pos + v > end || !readOrigin(buf, pos, pos + v)) return false;
        m.hasOrigin = true;
        pos += v;
        break;
      default:
        return false;
    }
  }
  return pos === end;
}

/** InvalidateStart in buf[pos, end) as the generic decoder returns it (`owner` and `origin` only when sent), or null. */
function readStart(buf: Uint8Array, pos: number, end: number): Record<string, unknown> | null {
  if (!readStartFields(buf, pos, end)) return null;
  const f = startOut;
  const m: Record<string, unknown> = { invalidationId: f.invalidationId, subscriptionId: f.subscriptionId, pid: f.pid, start: f.start, end: f.end, event: f.event, flags: f.flags, blockable: f.blockable, curSeq: f.curSeq };
  if (f.owner !== null) m.owner = f.owner;
  if (f.hasOrigin) m.origin = { operation: f.operation, operationId: f.operationId, detail: f.detail };
  return m;
}

/** InvalidateEnd in buf[pos, end) as the generic decoder returns it: fields 1 to 7, then owner at 8 (only when sent); or null. */
function readEnd(buf: Uint8Array, pos: number, end: number): Record<string, unknown> | null {
  const m = endOut;
  m.invalidationId = m.subscriptionId = m.pid = m.start = m.end = m.event = m.flags = 0;
  m.owner = null;
  while (pos < end) {
    const tag = buf[pos++];
    let v = buf[pos];
    if (v < 0x80) pos++;
    else if ((v = varintAt(buf, pos)) < 0) return null;
    else pos = vpos;
    const r = rangeField(m, tag, v);
    if (r > 0) continue;
    if (r < 0 || tag !== ((8 << 3) | VARINT) || v > U32_MAX) return null;
    m.owner = v;
  }
  if (pos !== end) return null;
  const out: Record<string, unknown> = { invalidationId: m.invalidationId, subscriptionId: m.subscriptionId, pid: m.pid, start: m.start, end: m.end, event: m.event, flags: m.flags };
  if (m.owner !== null) out.owner = m.owner;
  return out;
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

/** InvalidateAck in buf[pos, end), into ackOut; false for anything the generic decoder must decide. */
function readAck(buf: Uint8Array, pos: number, end: number): boolean {
  const m = ackOut;
  m.invalidationId = m.subscriptionId = m.result = 0;
  m.keptReads = false;
  while (pos < end) {
    const tag = buf[pos++];
    let v = buf[pos];
    if (v < 0x80) pos++;
    else if ((v = varintAt(buf, pos)) < 0) return false;
    else pos = vpos;
    switch (tag) {
      case (1 << 3) | VARINT:
        m.invalidationId = v;
        break;
      case (2 << 3) | VARINT:
        m.subscriptionId = v;
        break;
      case (3 << 3) | VARINT:
        if (v > I32_MAX) return false;
        m.result = v;
        break;
      case (4 << 3) | VARINT:
        if (v > U32_MAX) return false;
        m.keptReads = v !== 0;
        break;
      default:
        return false;
    }
  }
  return pos === end;
}

/** What frameBody found: the body's bounds, and the frame's request id. */
let bodyStart = 0;
let bodyEnd = 0;
let frameRequestId = 0;

/**
 * Walks a frame: request ids and exactly one body field, whose number must be `a` or `b`. Returns
 * the body's number (bodyStart, bodyEnd and frameRequestId set: the body is read after the frame,
 * as a request id may follow it on the wire), or 0 when the frame is anything else.
 */
function frameBody(buf: Uint8Array, a: number, b: number): number {
  const n = buf.length;
  let pos = 0;
  let body = 0;
  frameRequestId = 0;
  while (pos < n) {
    const tag = buf[pos++];
    let v = buf[pos];
    if (v < 0x80) pos++;
    else if ((v = varintAt(buf, pos)) < 0) return 0;
    else pos = vpos;
    if (tag === ((FRAME_REQUEST_ID << 3) | VARINT)) {
      frameRequestId = v;
      continue;
    }
    if ((tag !== ((a << 3) | LEN) && tag !== ((b << 3) | LEN)) || body !== 0 || pos + v > n) return 0;
    body = tag >>> 3;
    bodyStart = pos;
    bodyEnd = pos += v;
  }
  return pos === n ? body : 0;
}

/** A ServerFrame carrying InvalidateStart or InvalidateEnd, as codec.ts decodes it; else null. */
export function decodeHotServerFrame(buf: Uint8Array): Record<string, unknown> | null {
  const no = frameBody(buf, SERVER_INVALIDATE_START, SERVER_INVALIDATE_END);
  if (no === 0) return null;
  const requestId = frameRequestId;
  if (no === SERVER_INVALIDATE_START) {
    const m = readStart(buf, bodyStart, bodyEnd);
    return m === null ? null : { requestId, body: 'invalidateStart', invalidateStart: m };
  }
  const m = readEnd(buf, bodyStart, bodyEnd);
  return m === null ? null : { requestId, body: 'invalidateEnd', invalidateEnd: m };
}

/**
 * A ServerFrame carrying InvalidateStart, read into a shared object that the next call overwrites
 * (a client's path: one per round, handed on at once, with no frame object and no Origin object);
 * null where decodeHotServerFrame declines, and for any other body.
 */
export function decodeStartFields(buf: Uint8Array): StartFields | null {
  if (frameBody(buf, SERVER_INVALIDATE_START, SERVER_INVALIDATE_START) === 0) return null;
  if (!readStartFields(buf, bodyStart, bodyEnd)) return null;
  startOut.requestId = frameRequestId;
  return startOut;
}

/**
 * A ClientFrame carrying InvalidateAck, read into a shared object that the next call overwrites
 * (the session's path: it hands the fields on at once); null where decodeHotClientFrame declines.
 */
export function decodeAckFields(buf: Uint8Array): AckFields | null {
  if (frameBody(buf, CLIENT_INVALIDATE_ACK, CLIENT_INVALIDATE_ACK) === 0) return null;
  if (!readAck(buf, bodyStart, bodyEnd)) return null;
  ackOut.requestId = frameRequestId;
  return ackOut;
}

/** A ClientFrame carrying InvalidateAck, as codec.ts decodes it; else null. */
export function decodeHotClientFrame(buf: Uint8Array): Record<string, unknown> | null {
  const a = decodeAckFields(buf);
  if (a === null) return null;
  return { requestId: a.requestId, body: 'invalidateAck', invalidateAck: { invalidationId: a.invalidationId, subscriptionId: a.subscriptionId, result: a.result, keptReads: a.keptReads } };
}
