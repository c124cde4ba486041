/**
 * The one door to the generated protobuf code (src/channel/gen, from proto/devmirror/v1): nothing
 * else imports it. Frames go in and out as plain objects:
 *
 * - 64-bit fields are `number` when they fit in 2^53 and `bigint` above (ULONG_MAX, ids near the
 *   top of the range); encoding accepts either, so nothing is rounded on the way through;
 * - a decoded message has every scalar field (defaults filled in, as proto3 defines them); nested
 *   messages and proto3 `optional` fields are absent when not sent;
 * - a frame names the message it carries in `body` (the oneof), and carries it under that key.
 *
 * Malformed input (truncated frames, bad wire types, oversized varints, unknown bodies) is a
 * `DevmirrorError` with code DM_ERR_CHANNEL_MALFORMED, never a crash.
 */
import Long from 'long';
import { devmirror } from './gen/notifier.js';
import { DevmirrorError } from '../errors.js';
import { decodeAckFields, decodeHotClientFrame, decodeHotServerFrame, decodeStartFields, encodeAckFields, encodeEndFields, encodeHotClientFrame, encodeHotServerFrame, encodeStartFields, type AckFields, type StartFields } from './hot-frames.js';

const v1 = devmirror.v1;
type G = typeof devmirror.v1;

/** A uint64 on the wire: a number below 2^53, a bigint at or above. */
export type U64 = number | bigint;

type IsMessage<T> = T extends Long | Uint8Array | readonly unknown[] ? false : T extends object ? true : false;
type Value<T> = T extends Long ? U64 : T extends Uint8Array ? Uint8Array : T extends readonly (infer E)[] ? Value<E>[] : T extends object ? Msg<T> : T;
/** A decoded message: scalars always present, nested messages optional. */
export type Msg<T> = {
  -readonly [K in keyof T as IsMessage<NonNullable<T[K]>> extends true ? never : K]-?: Value<NonNullable<T[K]>>;
} & {
  -readonly [K in keyof T as IsMessage<NonNullable<T[K]>> extends true ? K : never]?: Value<NonNullable<T[K]>>;
};
type InValue<T> = T extends Long ? U64 : T extends Uint8Array ? Uint8Array : T extends readonly (infer E)[] ? InValue<E>[] : T extends object ? In<T> : T;
/** A message to encode: every field optional (proto3 defaults). */
export type In<T> = { [K in keyof T]?: InValue<NonNullable<T[K]>> | null };

type I = import('./gen/notifier.js').devmirror.v1.IClientFrame;
type S = import('./gen/notifier.js').devmirror.v1.IServerFrame;
type Gen = import('./gen/notifier.js').devmirror.v1.IClientFrame & import('./gen/notifier.js').devmirror.v1.IServerFrame;

export type ClientBody = Exclude<keyof I, 'requestId'>;
export type ServerBody = Exclude<keyof S, 'requestId'>;

/** A decoded client frame: `body` names the message, which sits under that key. */
export type ClientFrame = { [B in ClientBody]: { requestId: U64; body: B } & { [K in B]: Msg<NonNullable<I[B]>> } }[ClientBody];
export type ServerFrame = { [B in ServerBody]: { requestId: U64; body: B } & { [K in B]: Msg<NonNullable<S[B]>> } }[ServerBody];
/** A frame to encode: one body key set. */
export type ClientFrameIn = In<I>;
export type ServerFrameIn = In<S>;

export type M<K extends keyof Gen> = Msg<NonNullable<Gen[K]>>;
export type Hello = M<'hello'>;
export type Welcome = M<'welcome'>;
export type Subscribe = M<'subscribe'>;
export type InvalidateStart = M<'invalidateStart'>;
export type InvalidateAck = M<'invalidateAck'>;
export type InvalidateEnd = M<'invalidateEnd'>;
export type RangeFault = M<'rangeFault'>;
export type RangeFaultReply = M<'rangeFaultReply'>;
export type Dma = M<'dma'>;
export type DmaReply = M<'dmaReply'>;

// ---- enums, re-exported as plain constants -------------------------------------------------------

export const Event = v1.Event;
export const SubscriptionKind = { MM: v1.SubscriptionKind.SUBSCRIPTION_KIND_MM, INTERVAL: v1.SubscriptionKind.SUBSCRIPTION_KIND_INTERVAL } as const;
export const AckResult = { OK: v1.AckResult.ACK_RESULT_OK, WOULD_BLOCK: v1.AckResult.ACK_RESULT_WOULD_BLOCK } as const;
export const YoungOp = {
  CLEAR_FLUSH_YOUNG: v1.YoungOp.YOUNG_OP_CLEAR_FLUSH_YOUNG,
  CLEAR_YOUNG: v1.YoungOp.YOUNG_OP_CLEAR_YOUNG,
  TEST_YOUNG: v1.YoungOp.YOUNG_OP_TEST_YOUNG,
} as const;
export const MigrateDirection = { TO_DEVICE: v1.MigrateDirection.MIGRATE_DIRECTION_TO_DEVICE, TO_SYSTEM: v1.MigrateDirection.MIGRATE_DIRECTION_TO_SYSTEM } as const;
/** The protocol versions this build speaks. */
export const PROTOCOL_VERSION = 1;

// ---- 64-bit values ----------------------------------------------------------------------------

const TWO53 = 2 ** 53;
/** 2^64 - 1, the end of a whole address space on the wire. */
export const WIRE_ULONG_MAX = 0xffffffffffffffffn;

function fromLong(l: Long): U64 {
  // Unsigned: high word below 2^21 means the value fits in 53 bits.
  const hi = l.high >>> 0;
  if (hi < 0x200000) return hi * 0x100000000 + (l.low >>> 0);
  return (BigInt(hi) << 32n) | BigInt(l.low >>> 0);
}

function toLong(b: bigint): Long {
  if (b < 0n || b > WIRE_ULONG_MAX) throw new DevmirrorError('DM_ERR_CHANNEL_MALFORMED', `a 64-bit field is out of range: ${b}`);
  return Long.fromBits(Number(b & 0xffffffffn) | 0, Number(b >> 32n) | 0, true);
}

/** Converts a decoded value (messages, Longs, arrays) into plain data. */
function plain(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  if (v instanceof Uint8Array) return v;
  if (Long.isLong(v)) return fromLong(v as Long);
  if (Array.isArray(v)) {
    if (v.length === 0) return [];
    if (typeof v[0] !== 'object') return v;
    return v.map(plain);
  }
  const out: Record<string, unknown> = {};
  // for..in also walks the prototype: that is where protobufjs keeps proto3 defaults.
  for (const k in v as Record<string, unknown>) {
    const x = (v as Record<string, unknown>)[k];
    if (x === null || x === undefined || typeof x === 'function') continue;
    out[k] = plain(x);
  }
  return out;
}

/** Replaces bigints by Longs (protobufjs writes numbers and Longs); copies only what it changes. */
function wire(v: unknown): unknown {
  if (typeof v === 'bigint') return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= 0n ? Number(v) : toLong(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new DevmirrorError('DM_ERR_CHANNEL_MALFORMED', `a number field is not finite: ${v}`);
    return v;
  }
  if (typeof v !== 'object' || v === null || v instanceof Uint8Array || Long.isLong(v)) return v;
  if (Array.isArray(v)) {
    let out: unknown[] | null = null;
    for (let i = 0; i < v.length; i++) {
      const x = v[i];
      if (typeof x === 'object' || typeof x === 'bigint') {
        const w = wire(x);
        if (w !== x) (out ??= v.slice())[i] = w;
      }
    }
    return out ?? v;
  }
  let out: Record<string, unknown> | null = null;
  for (const k of Object.keys(v)) {
    const x = (v as Record<string, unknown>)[k];
    if (typeof x === 'number' && !Number.isFinite(x)) throw new DevmirrorError('DM_ERR_CHANNEL_MALFORMED', `field ${k} is not a finite number: ${x}`);
    if (typeof x === 'object' || typeof x === 'bigint') {
      const w = wire(x);
      if (w !== x) (out ??= { ...(v as Record<string, unknown>) })[k] = w;
    }
  }
  return out ?? v;
}

function malformed(e: unknown): DevmirrorError {
  return new DevmirrorError('DM_ERR_CHANNEL_MALFORMED', `malformed frame: ${(e as Error)?.message ?? String(e)}`);
}

// ---- frames -----------------------------------------------------------------------------------

// The invalidation round's frames (InvalidateStart, InvalidateEnd, InvalidateAck) take a hand-written
// path first (hot-frames.ts): it yields exactly what the generic path yields, or declines.

export function encodeClientFrame(f: ClientFrameIn): Uint8Array {
  return encodeHotClientFrame(f) ?? encodeClientFrameGeneric(f);
}

export function encodeServerFrame(f: ServerFrameIn): Uint8Array {
  return encodeHotServerFrame(f) ?? encodeServerFrameGeneric(f);
}

/**
 * The round's frames from their fields, or null: then encode (or decode) the frame object. The
 * session writes starts and ends and reads acknowledgements this way, a client writes its
 * acknowledgements.
 */
export { encodeStartFields, encodeEndFields, encodeAckFields, decodeAckFields, decodeStartFields, type AckFields, type StartFields };

/** The generated encoder alone (the reference the fast path is tested against). */
export function encodeClientFrameGeneric(f: ClientFrameIn): Uint8Array {
  return v1.ClientFrame.encode(wire(f) as never).finish();
}

export function encodeServerFrameGeneric(f: ServerFrameIn): Uint8Array {
  return v1.ServerFrame.encode(wire(f) as never).finish();
}

export function decodeClientFrame(buf: Uint8Array): ClientFrame {
  return (decodeHotClientFrame(buf) as ClientFrame | null) ?? decodeClientFrameGeneric(buf);
}

export function decodeServerFrame(buf: Uint8Array): ServerFrame {
  return (decodeHotServerFrame(buf) as ServerFrame | null) ?? decodeServerFrameGeneric(buf);
}

/** The generated decoder alone (the reference the fast path is tested against). */
export function decodeClientFrameGeneric(buf: Uint8Array): ClientFrame {
  let m: InstanceType<G['ClientFrame']>;
  try {
    m = v1.ClientFrame.decode(buf);
  } catch (e) {
    throw malformed(e);
  }
  const body = m.body as ClientBody | undefined;
  if (!body) throw new DevmirrorError('DM_ERR_CHANNEL_MALFORMED', 'frame carries no known message');
  const out = { requestId: fromLong(m.requestId as Long), body, [body]: plain(m[body]) };
  return out as unknown as ClientFrame;
}

export function decodeServerFrameGeneric(buf: Uint8Array): ServerFrame {
  let m: InstanceType<G['ServerFrame']>;
  try {
    m = v1.ServerFrame.decode(buf);
  } catch (e) {
    throw malformed(e);
  }
  const body = m.body as ServerBody | undefined;
  if (!body) throw new DevmirrorError('DM_ERR_CHANNEL_MALFORMED', 'frame carries no known message');
  const out = { requestId: fromLong(m.requestId as Long), body, [body]: plain(m[body]) };
  return out as unknown as ServerFrame;
}

/**
 * Encodes / decodes one message by its type name (e.g. "InvalidateStart"), for golden files and
 * interoperability tests with `protoc`.
 */
export function encodeMessage(type: string, value: Record<string, unknown>): Uint8Array {
  const T = (v1 as unknown as Record<string, { encode(m: unknown): { finish(): Uint8Array } }>)[type];
  if (!T) throw new DevmirrorError('DM_ERR_VALIDATION', `no message type ${type}`);
  return T.encode(wire(value)).finish();
}

export function decodeMessage(type: string, buf: Uint8Array): Record<string, unknown> {
  const T = (v1 as unknown as Record<string, { decode(b: Uint8Array): unknown }>)[type];
  if (!T) throw new DevmirrorError('DM_ERR_VALIDATION', `no message type ${type}`);
  try {
    return plain(T.decode(buf)) as Record<string, unknown>;
  } catch (e) {
    throw malformed(e);
  }
}

/**
 * Every message kind a ClientFrame can carry: the members of its `body` oneof, in schema order,
 * read from the generated code (a member is a field that, once set, becomes the frame's `body`).
 * Tests iterate it so that a message kind added to the schema without a case fails them.
 */
export function clientFrameKinds(): ClientBody[] {
  const fields = Object.keys(v1.ClientFrame.prototype);
  return fields.filter((k) => (new v1.ClientFrame({ [k]: {} } as never) as unknown as { body?: string }).body === k) as ClientBody[];
}

/** Every message type name of the schema (for tests and tooling). */
export function messageTypes(): string[] {
  return Object.keys(v1).filter((k) => typeof (v1 as unknown as Record<string, { encode?: unknown }>)[k]?.encode === 'function');
}

/** Converts a wire address to a kernel address: ULONG_MAX maps to the kernel's ULONG_MAX (2^64). */
export function addrFromWire(v: U64, kernelUlongMax: number): number {
  if (typeof v === 'number') return v;
  if (v === WIRE_ULONG_MAX) return kernelUlongMax;
  // Above 2^53 only bounds occur (the user address space ends at 2^47): a page multiple converts
  // exactly; anything else is rounded to the nearest double.
  return Number(v);
}

/** Converts a kernel address to its wire form (the kernel's ULONG_MAX, 2^64, becomes 2^64 - 1). */
export function addrToWire(a: number): U64 {
  return a >= 2 ** 64 ? WIRE_ULONG_MAX : a >= TWO53 ? BigInt(a) : a;
}
