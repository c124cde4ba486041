import { describe, expect, it } from 'vitest';
import { WIRE_ULONG_MAX, addrFromWire, addrToWire, decodeClientFrame, decodeServerFrame, encodeClientFrame, encodeServerFrame } from '../../src/channel/codec.js';

describe('channel codec', () => {
  it('round-trips 64-bit values exactly: numbers below 2^53, bigints above', () => {
    const f = decodeServerFrame(encodeServerFrame({ requestId: 2n ** 60n + 1n, invalidateStart: { invalidationId: 2 ** 53 - 1, start: 0x7fff_ffff_f000, end: WIRE_ULONG_MAX, curSeq: 3 } }));
    expect(f.requestId).toBe(2n ** 60n + 1n);
    expect(f.body).toBe('invalidateStart');
    if (f.body !== 'invalidateStart') throw new Error('wrong body');
    expect(f.invalidateStart.invalidationId).toBe(2 ** 53 - 1);
    expect(f.invalidateStart.start).toBe(0x7fff_ffff_f000);
    expect(f.invalidateStart.end).toBe(WIRE_ULONG_MAX);
    expect(f.invalidateStart.owner).toBeUndefined(); // proto3 optional: absent
    expect(f.invalidateStart.flags).toBe(0); // defaults filled in
  });

  it('keeps an optional field that is set to its default', () => {
    const f = decodeServerFrame(encodeServerFrame({ invalidateEnd: { owner: 0 } }));
    if (f.body !== 'invalidateEnd') throw new Error('wrong body');
    expect(f.invalidateEnd.owner).toBe(0);
  });

  it('maps the kernel ULONG_MAX to the wire and back', () => {
    expect(addrToWire(2 ** 64)).toBe(WIRE_ULONG_MAX);
    expect(addrFromWire(WIRE_ULONG_MAX, 2 ** 64)).toBe(2 ** 64);
    expect(addrToWire(4096)).toBe(4096);
  });

  it('rejects malformed bytes, empty frames and out-of-range values with typed errors', () => {
    expect(() => decodeClientFrame(new Uint8Array([0x0a, 0x05, 0x01]))).toThrow(expect.objectContaining({ code: 'DM_ERR_CHANNEL_MALFORMED' }));
    expect(() => decodeClientFrame(new Uint8Array([]))).toThrow(expect.objectContaining({ code: 'DM_ERR_CHANNEL_MALFORMED' }));
    expect(() => encodeClientFrame({ invalidateAck: { invalidationId: 2n ** 64n } })).toThrow(expect.objectContaining({ code: 'DM_ERR_CHANNEL_MALFORMED' }));
    expect(() => encodeClientFrame({ invalidateAck: { invalidationId: Number.NaN } })).toThrow(expect.objectContaining({ code: 'DM_ERR_CHANNEL_MALFORMED' }));
  });
});
