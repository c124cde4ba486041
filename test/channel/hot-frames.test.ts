/**
 * The hand-written path for the invalidation round's frames (src/channel/hot-frames.ts) against the
 * generated code it stands in for: same bytes out, same plain frames in, same errors (by declining).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeClientFrame,
  decodeClientFrameGeneric,
  decodeServerFrame,
  decodeServerFrameGeneric,
  encodeClientFrame,
  encodeClientFrameGeneric,
  encodeServerFrame,
  encodeServerFrameGeneric,
  WIRE_ULONG_MAX,
} from '../../src/channel/codec.js';
import { decodeAckFields, decodeHotClientFrame, decodeHotServerFrame, decodeStartFields, encodeAckFields, encodeEndFields, encodeHotClientFrame, encodeHotServerFrame, encodeStartFields } from '../../src/channel/hot-frames.js';

// Values that sit on every boundary the fast path checks, and some it must decline.
const u64 = fc.oneof(fc.constantFrom(0, 1, 127, 128, 2 ** 32 - 1, 2 ** 32, 2 ** 49, 2 ** 53 - 1, 0x7fff_ffff_f000), fc.nat(), fc.maxSafeNat(), fc.constantFrom<unknown>(2n ** 53n, WIRE_ULONG_MAX, 5n, -1, 1.5, null, undefined));
const u32 = fc.oneof(fc.constantFrom(0, 1, 2 ** 31 - 1, 2 ** 32 - 1), fc.nat(), fc.constantFrom<unknown>(2 ** 32, -3, 0.5, null, undefined));
const i32 = fc.oneof(fc.constantFrom(0, 1, 7, 99, 2 ** 31 - 1), fc.constantFrom<unknown>(-1, 2 ** 31, null, undefined));
const bool = fc.oneof(fc.boolean(), fc.constantFrom<unknown>(null, undefined, 1));
const text = fc.oneof(fc.constantFrom('', 'madvise', 'munmap', 'oom_reaper'), fc.string({ maxLength: 20 }), fc.constantFrom<unknown>('héllo', 'x'.repeat(300), null, undefined));
const origin = fc.option(fc.record({ operation: text, operationId: u64, detail: text }, { requiredKeys: [] }), { nil: undefined });

const startMsg = fc.record(
  { invalidationId: u64, subscriptionId: u64, pid: u32, start: u64, end: u64, event: i32, flags: u32, blockable: bool, owner: u32, curSeq: u64, origin },
  { requiredKeys: [] },
);
const endMsg = fc.record({ invalidationId: u64, subscriptionId: u64, pid: u32, start: u64, end: u64, event: i32, flags: u32, owner: u32 }, { requiredKeys: [] });
const ackMsg = fc.record({ invalidationId: u64, subscriptionId: u64, result: i32, keptReads: bool }, { requiredKeys: [] });
const requestId = fc.constantFrom<unknown>(undefined, undefined, undefined, 0, 7, 2n ** 60n);

const serverFrame = fc.oneof(
  fc.record({ requestId, invalidateStart: startMsg }),
  fc.record({ requestId, invalidateEnd: endMsg }),
  fc.record({ requestId, release: fc.record({ invalidationId: fc.nat(), subscriptionId: fc.nat(), pid: fc.nat() }) }),
);
const clientFrame = fc.oneof(fc.record({ requestId, invalidateAck: ackMsg }), fc.record({ requestId, readBegin: fc.record({ subscriptionId: fc.nat() }) }));

/** A frame's bytes from the generated encoder, as they are, with one byte changed, or truncated. */
function mutatedBytes<T>(frames: fc.Arbitrary<T>, encode: (f: never) => Uint8Array): fc.Arbitrary<Uint8Array> {
  return frames.chain((f) => {
    let b: Uint8Array;
    try {
      b = encode(f as never);
    } catch {
      b = new Uint8Array([0x2a, 0x00]);
    }
    return fc.tuple(fc.nat({ max: Math.max(0, b.length - 1) }), fc.nat({ max: 255 }), fc.constantFrom('as-is', 'flip', 'truncate')).map(([at, byte, how]) => {
      const buf = new Uint8Array(b);
      if (how === 'flip' && buf.length > 0) buf[at] = byte;
      return how === 'truncate' ? buf.subarray(0, at) : buf;
    });
  });
}
const serverFrameBytes = mutatedBytes(serverFrame, encodeServerFrameGeneric);

/** What a call yields: its value, or the error code it threw. */
function outcome<T>(fn: () => T): { ok: T } | { code: string } {
  try {
    return { ok: fn() };
  } catch (e) {
    return { code: (e as { code?: string }).code ?? String(e) };
  }
}

describe('hot frames (hand-written wire path)', () => {
  it('engages for the round\'s common frames, so the properties below test it', () => {
    const start = { invalidateStart: { invalidationId: 12, subscriptionId: 1_000_001, pid: 100, start: 0x7f0000000000, end: 0x7f0000001000, event: 1, flags: 1, blockable: true, curSeq: 12345, origin: { operation: 'madvise' } } };
    const bytes = encodeHotServerFrame(start);
    expect(bytes).not.toBeNull();
    expect(Buffer.from(bytes!).equals(Buffer.from(encodeServerFrameGeneric(start)))).toBe(true);
    expect(decodeHotServerFrame(bytes!)).toEqual(decodeServerFrameGeneric(bytes!));
    const end = { invalidateEnd: { invalidationId: 12, subscriptionId: 3, pid: 100, start: 4096, end: 8192, event: 1, flags: 1 } };
    expect(decodeHotServerFrame(encodeHotServerFrame(end)!)).toEqual(decodeServerFrameGeneric(encodeServerFrameGeneric(end)));
    const ack = { invalidateAck: { invalidationId: 12, subscriptionId: 3, result: 0 } };
    const ab = encodeHotClientFrame(ack);
    expect(ab).not.toBeNull();
    expect(decodeHotClientFrame(ab!)).toEqual(decodeClientFrameGeneric(ab!));
    const kept = { invalidateAck: { invalidationId: 12, subscriptionId: 3, result: 0, keptReads: true } };
    const kb = encodeHotClientFrame(kept);
    expect(Buffer.from(kb!).equals(Buffer.from(encodeClientFrameGeneric(kept)))).toBe(true);
    expect(decodeHotClientFrame(kb!)).toEqual(expect.objectContaining({ invalidateAck: expect.objectContaining({ keptReads: true }) }));
    expect(decodeHotClientFrame(ab!)).toEqual(expect.objectContaining({ invalidateAck: expect.objectContaining({ keptReads: false }) }));
  });

  it('writes the longest origin it takes whole (two strings of 256 characters)', () => {
    const f = { invalidateStart: { invalidationId: 1, curSeq: 2 ** 40, origin: { operation: 'o'.repeat(256), operationId: 2 ** 52, detail: 'd'.repeat(256) } } };
    const bytes = encodeHotServerFrame(f);
    expect(bytes).not.toBeNull();
    expect(Buffer.from(bytes!).equals(Buffer.from(encodeServerFrameGeneric(f)))).toBe(true);
    expect(decodeHotServerFrame(bytes!)).toEqual(decodeServerFrameGeneric(bytes!));
  });

  it('declines what the generic path must decide (bigints, non-ASCII, request ids, other bodies)', () => {
    expect(encodeHotServerFrame({ invalidateStart: { end: WIRE_ULONG_MAX } })).toBeNull();
    expect(encodeHotServerFrame({ invalidateStart: { origin: { operation: 'é' } } })).toBeNull();
    expect(encodeHotServerFrame({ requestId: 3, invalidateEnd: {} })).toBeNull();
    expect(encodeHotServerFrame({ release: { pid: 1 } })).toBeNull();
    expect(encodeHotClientFrame({ invalidateAck: { result: -1 } })).toBeNull();
    expect(decodeHotServerFrame(encodeServerFrameGeneric({ invalidateStart: { end: WIRE_ULONG_MAX } }))).toBeNull();
    expect(decodeHotServerFrame(new Uint8Array([0x2a, 0x05, 0x08]))).toBeNull(); // truncated
  });

  it('encodes server frames to the same bytes as the generated encoder, or fails the same way', () => {
    fc.assert(
      fc.property(serverFrame, (f) => {
        const fast = outcome(() => Buffer.from(encodeServerFrame(f as never)).toString('hex'));
        const generic = outcome(() => Buffer.from(encodeServerFrameGeneric(f as never)).toString('hex'));
        expect(fast).toEqual(generic);
      }),
      { numRuns: 3000, seed: 0x5eed },
    );
  });

  it('encodes client frames to the same bytes as the generated encoder, or fails the same way', () => {
    fc.assert(
      fc.property(clientFrame, (f) => {
        const fast = outcome(() => Buffer.from(encodeClientFrame(f as never)).toString('hex'));
        const generic = outcome(() => Buffer.from(encodeClientFrameGeneric(f as never)).toString('hex'));
        expect(fast).toEqual(generic);
      }),
      { numRuns: 2000, seed: 0x5eed },
    );
  });

  it('decodes to the same plain frames as the generated decoder, also for mutated and truncated bytes', () => {
    fc.assert(
      fc.property(serverFrameBytes, (input) => {
        const fast = outcome(() => decodeServerFrame(input));
        const generic = outcome(() => decodeServerFrameGeneric(input));
        expect(fast).toEqual(generic);
      }),
      { numRuns: 4000, seed: 0x5eed },
    );
  });

  it('decodes client frames to the same plain frames as the generated decoder, also when mutated or truncated', () => {
    fc.assert(
      fc.property(mutatedBytes(clientFrame, encodeClientFrameGeneric), (buf) => {
        expect(outcome(() => decodeClientFrame(buf))).toEqual(outcome(() => decodeClientFrameGeneric(buf)));
      }),
      { numRuns: 3000, seed: 0x5eed },
    );
  });

  // The session's path: the round's frames from their fields. Every value the session can hand it
  // (numbers, null owners, any operation string) against the frame object the session would build
  // otherwise, encoded by the generated encoder.
  // Mostly values in range (so most cases encode), with the ones that must decline mixed in.
  const flatU64 = fc.oneof({ arbitrary: fc.constantFrom(0, 1, 127, 128, 2 ** 32, 2 ** 53 - 1, 0x7fff_ffff_f000), weight: 3 }, { arbitrary: fc.maxSafeNat(), weight: 3 }, { arbitrary: fc.constantFrom(2 ** 53, 2 ** 64, -1, 1.5), weight: 1 });
  const flatU32 = fc.oneof({ arbitrary: fc.constantFrom(0, 1, 2 ** 32 - 1), weight: 3 }, { arbitrary: fc.nat(), weight: 3 }, { arbitrary: fc.constantFrom(2 ** 32, -3, 0.5), weight: 1 });
  const flatI32 = fc.oneof({ arbitrary: fc.constantFrom(0, 1, 7, 99, 2 ** 31 - 1), weight: 6 }, { arbitrary: fc.constantFrom(-1, 2 ** 31), weight: 1 });
  const flatOwner = fc.oneof(fc.constant(null), flatU32);
  const flatText = fc.oneof({ arbitrary: fc.constantFrom('', 'madvise', 'oom_reaper'), weight: 3 }, { arbitrary: fc.string({ maxLength: 20 }), weight: 3 }, { arbitrary: fc.constantFrom('héllo', 'x'.repeat(300)), weight: 1 });
  /** Addresses as the session sends them (addrToWire): bigints from 2^53. */
  const wireAddr = (a: number): number | bigint => (a >= 2 ** 64 ? WIRE_ULONG_MAX : a >= 2 ** 53 ? BigInt(a) : a);

  it('encodes InvalidateStart from its fields to the generated encoder\'s bytes for the same frame, or declines', () => {
    let engaged = 0;
    fc.assert(
      fc.property(fc.tuple(flatU64, flatU64, flatU32, flatU64, flatU64, flatI32, flatU32, flatOwner, flatU64, flatText), ([id, sub, pid, start, end, event, flags, owner, curSeq, op]) => {
        const flat = encodeStartFields(id, sub, pid, start, end, event, flags, owner, curSeq, op);
        const frame = { invalidateStart: { invalidationId: id, subscriptionId: sub, pid, start: wireAddr(start), end: wireAddr(end), event, flags, blockable: (flags & 1) !== 0, owner, curSeq, origin: { operation: op } } };
        const generic = outcome(() => Buffer.from(encodeServerFrameGeneric(frame as never)).toString('hex'));
        if (flat === null) {
          // Declined: only where the object path declines too (then the session takes it).
          expect(encodeHotServerFrame(frame)).toBeNull();
          return;
        }
        engaged++;
        expect({ ok: Buffer.from(flat).toString('hex') }).toEqual(generic);
      }),
      { numRuns: 3000, seed: 0x5eed },
    );
    expect(engaged).toBeGreaterThan(300);
  });

  it('encodes InvalidateEnd from its fields to the generated encoder\'s bytes for the same frame, or declines', () => {
    let engaged = 0;
    fc.assert(
      fc.property(fc.tuple(flatU64, flatU64, flatU32, flatU64, flatU64, flatI32, flatU32, flatOwner), ([id, sub, pid, start, end, event, flags, owner]) => {
        const flat = encodeEndFields(id, sub, pid, start, end, event, flags, owner);
        const frame = { invalidateEnd: { invalidationId: id, subscriptionId: sub, pid, start: wireAddr(start), end: wireAddr(end), event, flags, owner } };
        if (flat === null) {
          expect(encodeHotServerFrame(frame)).toBeNull();
          return;
        }
        engaged++;
        expect({ ok: Buffer.from(flat).toString('hex') }).toEqual(outcome(() => Buffer.from(encodeServerFrameGeneric(frame as never)).toString('hex')));
      }),
      { numRuns: 3000, seed: 0x5eed },
    );
    expect(engaged).toBeGreaterThan(300);
  });

  it('encodes InvalidateAck from its fields to the generated encoder\'s bytes for the frame a client sends, or declines', () => {
    let engaged = 0;
    fc.assert(
      fc.property(fc.tuple(flatU64, flatU64, fc.constantFrom(0, 1, 2 ** 31 - 1, -1, 2 ** 31), fc.boolean()), ([id, sub, result, keptReads]) => {
        const flat = encodeAckFields(id, sub, result, keptReads);
        // The client's frame object: keptReads only when true.
        const body = { invalidationId: id, subscriptionId: sub, result };
        const frame = { invalidateAck: keptReads ? { ...body, keptReads: true } : body };
        if (flat === null) {
          expect(encodeHotClientFrame(frame)).toBeNull();
          return;
        }
        engaged++;
        expect({ ok: Buffer.from(flat).toString('hex') }).toEqual(outcome(() => Buffer.from(encodeClientFrameGeneric(frame as never)).toString('hex')));
        // And the session's reader gets the fields back.
        expect(decodeAckFields(flat)).toEqual({ requestId: 0, invalidationId: id, subscriptionId: sub, result, keptReads });
      }),
      { numRuns: 3000, seed: 0x5eed },
    );
    expect(engaged).toBeGreaterThan(300);
  });

  it('reads acknowledgements into one shared object, and declines what decodeHotClientFrame declines', () => {
    const a = decodeAckFields(encodeAckFields(5, 1_000_001, 0, false)!);
    const b = decodeAckFields(encodeAckFields(6, 1_000_002, 0, true)!);
    expect(b).toBe(a);
    expect(a).toEqual({ requestId: 0, invalidationId: 6, subscriptionId: 1_000_002, result: 0, keptReads: true });
    const readBegin = encodeClientFrameGeneric({ requestId: 3, readBegin: { subscriptionId: 9 } } as never);
    expect(decodeAckFields(readBegin)).toBeNull();
    expect(decodeHotClientFrame(readBegin)).toBeNull();
    const withId = encodeClientFrameGeneric({ requestId: 7, invalidateAck: { invalidationId: 1, subscriptionId: 2, result: 0 } } as never);
    expect(decodeAckFields(withId)).toEqual({ requestId: 7, invalidationId: 1, subscriptionId: 2, result: 0, keptReads: false });
  });

  it('reads starts in place to the generic decoder\'s fields, and declines what decodeHotServerFrame declines or any other body', () => {
    let read = 0;
    fc.assert(
      fc.property(serverFrameBytes, (input) => {
        const whole = decodeHotServerFrame(input) as { requestId: number; body: string; invalidateStart?: Record<string, unknown> & { origin?: { operation: string; operationId: number; detail: string } } } | null;
        const s = decodeStartFields(input);
        if (whole === null || whole.body !== 'invalidateStart') {
          expect(s).toBeNull();
          return;
        }
        read++;
        const m = whole.invalidateStart!;
        expect(s).toEqual({
          requestId: whole.requestId,
          invalidationId: m.invalidationId, subscriptionId: m.subscriptionId, pid: m.pid, start: m.start, end: m.end, event: m.event, flags: m.flags,
          blockable: m.blockable, owner: m.owner ?? null, curSeq: m.curSeq,
          hasOrigin: m.origin !== undefined, operation: m.origin?.operation ?? '', operationId: m.origin?.operationId ?? 0, detail: m.origin?.detail ?? '',
        });
        // And the whole frame is what the generated decoder returns (tested above), so the fields are too.
        expect(decodeServerFrameGeneric(input)).toEqual(whole);
      }),
      { numRuns: 4000, seed: 0x5eed },
    );
    expect(read).toBeGreaterThan(100); // the property above ran on starts (215 with this seed), not only on declines
    // One shared object, overwritten by the next call.
    const a = decodeStartFields(encodeStartFields(1, 2, 3, 4096, 8192, 1, 1, 7, 5, 'madvise')!);
    const c = decodeStartFields(encodeStartFields(9, 2, 3, 4096, 8192, 1, 0, null, 6, null)!);
    expect(c).toBe(a);
    expect(c).toMatchObject({ invalidationId: 9, owner: null, blockable: false, hasOrigin: true, operation: '' });
  });

  it('reads a repeated operation name from its cache only when every byte matches', () => {
    for (const op of ['madvise', 'munmap', 'mremap', 'madvise', 'mprotec', 'madvise']) {
      const f = decodeServerFrame(encodeStartFields(1, 2, 3, 4096, 8192, 1, 1, null, 5, op)!) as unknown as { invalidateStart: { origin: { operation: string } } };
      expect(f.invalidateStart.origin.operation).toBe(op);
    }
  });

  it('writes the round\'s frames as Buffers (ws sends those as they are)', () => {
    expect(Buffer.isBuffer(encodeStartFields(1, 2, 3, 4096, 8192, 1, 1, null, 5, 'madvise'))).toBe(true);
    expect(Buffer.isBuffer(encodeEndFields(1, 2, 3, 4096, 8192, 1, 1, 7))).toBe(true);
    expect(Buffer.isBuffer(encodeHotClientFrame({ invalidateAck: { invalidationId: 1, subscriptionId: 2, result: 0 } }))).toBe(true);
    expect(Buffer.isBuffer(encodeAckFields(1, 2, 0, false))).toBe(true);
  });
});
