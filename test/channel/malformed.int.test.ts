/**
 * Bad input on the channel (property-based with fast-check): random bytes, truncated frames, wrong
 * message kinds, oversized varints, text frames and oversized frames close that connection with
 * the documented code, and leave the kernel and every other client unaffected: a healthy client
 * keeps mirroring and acknowledging throughout.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { PROT } from '../../src/kernel/kernel.js';
import { encodeClientFrame, encodeServerFrame } from '../../src/channel/codec.js';
import { CLOSE } from '../../src/channel/close-codes.js';
import { startHarness, type Harness } from './helpers.js';

const PAGE = 4096;
let h: Harness;
let healthyAcks = 0;
let pid = 0;
let addr = 0;

beforeAll(async () => {
  h = await startHarness({ channel: { maxPayload: 64 * 1024 } });
  const k = h.svc.kernel;
  const p = k.createProcess('victim');
  pid = p.pid;
  addr = await k.mmap(p.pid, { length: 8 * PAGE, prot: PROT.READ | PROT.WRITE });
  await k.write(p.pid, addr, new Uint8Array(8 * PAGE).fill(3));
  const healthy = h.client({ name: 'healthy' });
  healthy.onInvalidateStart(() => {
    healthyAcks++;
    return true;
  });
  await healthy.connect();
  await healthy.subscribeInterval({ pid, start: addr, length: 8 * PAGE });
});
afterAll(async () => {
  await h.close();
});

/** Opens a raw socket, completes Hello unless told not to, sends `payload`, resolves with the close code. */
async function sendRaw(payload: Uint8Array | string, hello = true): Promise<number> {
  const ws = new WebSocket(h.url, { headers: { authorization: 'Bearer devmirror-local' } });
  await new Promise<void>((r, j) => (ws.once('open', () => r()), ws.once('error', j)));
  const code = new Promise<number>((r) => ws.once('close', (c) => r(c)));
  if (hello) {
    const welcomed = new Promise<void>((r) => ws.once('message', () => r()));
    ws.send(encodeClientFrame({ hello: { protocolVersions: [1] } }));
    await welcomed;
  }
  ws.send(payload);
  const t = setTimeout(() => ws.terminate(), 5000);
  const c = await code;
  clearTimeout(t);
  return c;
}

/** The kernel still works and the healthy client still answers. */
async function kernelAndHealthyClientFine(): Promise<void> {
  const before = healthyAcks;
  const k = h.svc.kernel;
  await k.madvise(pid, addr, PAGE, 'dontneed');
  expect(healthyAcks).toBe(before + 1);
  expect(k.audit().problems).toEqual([]);
}

describe('malformed channel input', () => {
  it('random bytes after Hello close with 1007 (or decode as a harmless frame)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 256 }), async (bytes) => {
        const code = await sendRaw(bytes);
        // Bytes that happen to decode are a well-formed frame of some kind: a request gets an
        // Error frame (we then time out and terminate: 1006) or a protocol error closes (4000).
        expect([CLOSE.INVALID_PAYLOAD, CLOSE.PROTOCOL, 1006, 1005]).toContain(code);
      }),
      { numRuns: 40 },
    );
    await kernelAndHealthyClientFine();
  });

  it('truncated frames close with 1007', async () => {
    const full = encodeClientFrame({ requestId: 7, subscribe: { kind: 2, pid, start: addr, length: 8 * PAGE, label: 'truncated' } });
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: full.length - 1 }), async (cut) => {
        const code = await sendRaw(full.subarray(0, cut));
        expect(code).toBe(CLOSE.INVALID_PAYLOAD);
      }),
      { numRuns: 15 },
    );
    await kernelAndHealthyClientFine();
  });

  it('an oversized varint closes with 1007', async () => {
    // requestId (field 1, varint) with 11 continuation bytes: longer than any 64-bit varint.
    const code = await sendRaw(new Uint8Array([0x08, ...new Array(11).fill(0xff), 0x01]));
    expect(code).toBe(CLOSE.INVALID_PAYLOAD);
    await kernelAndHealthyClientFine();
  });

  it('wrong message kinds close with 4000: a server frame, an ack before Hello, a second Hello', async () => {
    // A ServerFrame's Welcome is field 2 = ClientFrame's Hello: send an InvalidateStart (field 5 = invalidateAck) instead.
    expect(await sendRaw(encodeServerFrame({ invalidateEnd: { invalidationId: 1 } }))).toBe(CLOSE.PROTOCOL);
    expect(await sendRaw(encodeClientFrame({ invalidateAck: { invalidationId: 1, subscriptionId: 1 } }), false)).toBe(CLOSE.PROTOCOL);
    expect(await sendRaw(encodeClientFrame({ hello: { protocolVersions: [1] } }))).toBe(CLOSE.PROTOCOL);
    expect(await sendRaw(encodeClientFrame({ hello: { protocolVersions: [99] } }), false)).toBe(CLOSE.VERSION);
    await kernelAndHealthyClientFine();
  });

  it('text frames close with 1003, oversized frames with 1009', async () => {
    expect(await sendRaw('{"hello":1}')).toBe(CLOSE.UNSUPPORTED_DATA);
    expect(await sendRaw(new Uint8Array(65 * 1024))).toBe(CLOSE.TOO_BIG);
    await kernelAndHealthyClientFine();
  });

  it('a Hello without a valid token closes with 4401', async () => {
    const ws = new WebSocket(h.url);
    await new Promise<void>((r) => ws.once('open', () => r()));
    const code = new Promise<number>((r) => ws.once('close', (c) => r(c)));
    ws.send(encodeClientFrame({ hello: { protocolVersions: [1], token: 'wrong-token' } }));
    expect(await code).toBe(CLOSE.UNAUTHORIZED);
    await kernelAndHealthyClientFine();
  });
});
