/**
 * Acknowledgements that arrive as frames: the group resolves a parked set when its last ack is
 * answered, whatever the order, for every set an ack belongs to.
 */
import { describe, expect, it } from 'vitest';
import { ackKey, SocketAck, SocketAckGroup, SocketAckTable } from '../../src/channel/socket-ack.js';
import { ACK_OK, ACK_PENDING, ACK_REFUSED, parkAcksThen, spinAcks, waitAcks, type AckGroup, type PendingAck } from '../../src/notifier/pending-ack.js';

/** Whether a promise has settled once pending callbacks ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
}

describe('SocketAckGroup', () => {
  it('runs a parked continuation where the last answer is taken, and resolves with its value', async () => {
    const g = new SocketAckGroup();
    const acks = [1, 2].map((i) => new SocketAck(g, 7, i, true));
    const ran: string[] = [];
    expect(spinAcks(acks, true)).toBe(false);
    const p = parkAcksThen(acks, () => (ran.push('then'), 'value'));
    acks[1].settle(true);
    expect(ran).toEqual([]);
    acks[0].settle(true);
    // Inside settle, before it returned: no reaction in between.
    expect(ran).toEqual(['then']);
    await expect(p).resolves.toBe('value');
    expect(spinAcks(acks, true)).toBe(true);
  });

  it('rejects the parked continuation\'s promise with what it threw, and the ack stays answered', async () => {
    const g = new SocketAckGroup();
    const a = new SocketAck(g, 8, 1, true);
    const p = parkAcksThen([a], () => {
      throw new Error('settle failed');
    });
    expect(() => a.settle(true)).not.toThrow();
    await expect(p).rejects.toThrow('settle failed');
    expect(a.poll()).toBe(ACK_OK);
  });

  it('falls back to park and a reaction for a group without parkThen, and for acks of several groups', async () => {
    let release = (): void => undefined;
    const plain: AckGroup = { spin: () => false, park: () => new Promise<void>((r) => (release = r)) };
    const w: PendingAck = { group: plain, poll: () => ACK_PENDING };
    const g = new SocketAckGroup();
    const s = new SocketAck(g, 9, 1, true);
    const ran: string[] = [];
    expect(spinAcks([s, w], true)).toBe(false);
    const p = parkAcksThen([s, w], () => (ran.push('then'), 3));
    s.settle(true);
    expect(ran).toEqual([]); // the plain group's ack is still out
    release();
    await expect(p).resolves.toBe(3);
    expect(ran).toEqual(['then']);
  });

  it('flushes the connections held by starts when it spins, each once, those held during the flush too', () => {
    const g = new SocketAckGroup();
    const flushed: string[] = [];
    const late = { uncork: () => flushed.push('late') };
    g.holdStarts({ uncork: () => flushed.push('a') });
    // A flush that holds another connection (a write that failed and made the kernel send more).
    g.holdStarts({ uncork: () => (flushed.push('b'), g.holdStarts(late)) });
    expect(flushed).toEqual([]);
    const a = new SocketAck(g, 1, 1, true);
    expect(waitAcks([a])).not.toBeNull(); // spins first: the held starts leave before it parks
    expect(flushed).toEqual(['a', 'b', 'late']);
    a.settle(true);
    expect(waitAcks([a])).toBeNull();
    expect(flushed).toEqual(['a', 'b', 'late']); // nothing held twice
  });

  it('resolves a parked set when its last ack is answered, in any order', async () => {
    const g = new SocketAckGroup();
    const acks = [1, 2, 3].map((i) => new SocketAck(g, 10, i, true));
    const p = waitAcks(acks);
    expect(p).not.toBeNull();
    acks[2].settle(true);
    acks[0].settle(true);
    expect(await settled(p!)).toBe(false);
    acks[1].settle(false);
    expect(await settled(p!)).toBe(true);
    expect(acks.map((a) => a.poll())).toEqual([ACK_OK, ACK_REFUSED, ACK_OK]);
  });

  it('does not wait for acks answered before it parked', async () => {
    const g = new SocketAckGroup();
    const a = new SocketAck(g, 1, 1, true);
    const b = new SocketAck(g, 1, 2, true);
    a.settle(true);
    expect(await settled(g.park([a, b]))).toBe(false);
    b.settle(true);
    b.settle(false); // a second answer changes nothing
    expect(b.poll()).toBe(ACK_OK);
    expect(await settled(g.park([a, b]))).toBe(true);
    expect(waitAcks([a, b])).toBeNull(); // all answered: the spin sees it, nothing parks
  });

  it('resolves every set an ack belongs to, each when its own last ack is answered', async () => {
    const g = new SocketAckGroup();
    const shared = new SocketAck(g, 5, 1, true);
    const onlyFirst = new SocketAck(g, 5, 2, true);
    const onlySecond = new SocketAck(g, 6, 3, true);
    const third = new SocketAck(g, 7, 4, true);
    const first = g.park([shared, onlyFirst]);
    const second = g.park([onlySecond, shared]);
    const alsoShared = g.park([shared, third]);
    shared.settle(true);
    expect(await settled(first)).toBe(false);
    expect(await settled(second)).toBe(false);
    onlySecond.settle(true);
    expect(await settled(second)).toBe(true);
    expect(await settled(first)).toBe(false);
    onlyFirst.settle(true);
    expect(await settled(first)).toBe(true);
    expect(await settled(alsoShared)).toBe(false);
    third.settle(true);
    expect(await settled(alsoShared)).toBe(true);
    expect(shared.waiter).toBeNull();
    expect(shared.moreWaiters).toBeNull();
  });

  it('resolves at once for an empty or fully answered set', async () => {
    const g = new SocketAckGroup();
    expect(await settled(g.park([]))).toBe(true);
    const a = new SocketAck(g, 1, 1, false);
    expect(a.poll()).toBe(ACK_PENDING);
    a.settle(false);
    expect(await settled(g.park([a]))).toBe(true);
  });
});

describe('SocketAckTable', () => {
  const g = new SocketAckGroup();
  const ack = (id: number, sub: number): SocketAck => new SocketAck(g, id, sub, true);

  it('takes the newest ack from its slot and older ones from the map, in any order', () => {
    const t = new SocketAckTable();
    expect(t.take(1, 1)).toBeNull();
    const a = [ack(7, 1), ack(7, 2), ack(8, 1), ack(9, 3)];
    for (const x of a) t.add(x);
    expect(t.size).toBe(4);
    expect(t.values()).toEqual(a); // oldest first
    expect(t.take(7, 2)).toBe(a[1]);
    expect(t.take(7, 2)).toBeNull(); // taken once only
    expect(t.take(9, 3)).toBe(a[3]);
    expect(t.take(8, 2)).toBeNull(); // a pair that was never added
    expect(t.take(3, 1)).toBeNull();
    expect(t.size).toBe(2);
    expect(t.values()).toEqual([a[0], a[2]]);
    const b = ack(10, 1);
    t.add(b);
    expect(t.take(8, 1)).toBe(a[2]);
    expect(t.take(10, 1)).toBe(b);
    expect(t.take(7, 1)).toBe(a[0]);
    expect(t.size).toBe(0);
    expect(t.values()).toEqual([]);
  });

  it('keeps pairs apart whose ids need the string key, and clears', () => {
    const t = new SocketAckTable();
    const big = ack(2 ** 40, 3);
    const bigSub = ack(5, 2 ** 22);
    const small = ack(5, 3);
    t.add(big);
    t.add(bigSub);
    t.add(small);
    expect(typeof ackKey(2 ** 40, 3)).toBe('string');
    expect(typeof ackKey(5, 3)).toBe('number');
    expect(t.take(5, 2 ** 22)).toBe(bigSub);
    expect(t.take(2 ** 40, 3)).toBe(big);
    expect(t.take(5, 3)).toBe(small);
    t.add(ack(1, 1));
    t.add(ack(2, 1));
    t.clear();
    expect(t.size).toBe(0);
    expect(t.take(1, 1)).toBeNull();
    expect(t.take(2, 1)).toBeNull();
  });
});
