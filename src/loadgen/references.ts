/**
 * Reference handshakes for bench:handshake and the baselines of devmirror bench: the same fan-out (publish to N workers, wait for all N
 * acknowledgements, publish end) with nothing else in the way, three ways.
 *
 * Every reference has the shape of the real mailbox: each worker has its own doorbell word (the
 * kernel must be able to address only the workers whose range intersects) and every worker
 * acknowledges by bumping one shared ACKS word, on which the publisher waits.
 *
 *   blocking:        publisher Atomics.wait(ACKS);  worker Atomics.wait(DOORBELL)
 *   spin-then-park:  both spin SPIN loads on the word first, then Atomics.wait
 *   waitAsync:       publisher Atomics.waitAsync(ACKS) (an event-loop wake, the only park a thread
 *                    that serves sockets may use); worker Atomics.wait(DOORBELL)
 *   postMessage:     worker.postMessage start / reply / end, no shared memory
 *   spin-range:      spin-then-park, but each start carries a range the way the real mailbox does:
 *                    the publisher writes a 16-word call slot (14 words, the id last) on its own
 *                    64-byte line, then the doorbell on another; the worker reads the slot and
 *                    answers in it; the publisher polls the answer words (as the kernel does), then
 *                    parks on ACKS. What moving a NotifierRange across cores costs with no code
 *                    around it: the line transfers of the real round, none of its work.
 *
 * blocking and spin run in the bench's main thread and block it: the product's kernel thread never
 * does; waitAsync is the floor for a publisher that keeps its event loop.
 */
import process from 'node:process';
import { Worker } from 'node:worker_threads';
import { usSince } from '../lib/stats.js';
import { alignedSab } from '../lib/aligned-sab.js';

/** Shared words of the references (a tiny layout: word 0 is its version, as in src/kernel/layout). */
export const REF = { VERSION: 0, ACKS: 1, STOP: 2, SPIN: 3, DOORBELLS: 4 } as const;
const REF_VERSION = 1;

export type RefMode = 'blocking' | 'spin' | 'waitAsync' | 'postMessage' | 'spin-range';

/** spin-range: per worker, a doorbell line and a call-slot line after the 16-word header line. */
export const RANGE = { BASE: 16, STRIDE: 32, SLOT: 16, ANSWER: 14 } as const;

// The worker is plain JavaScript so the reference measures Atomics and postMessage, not a loader.
const WORKER_SRC = `
const { parentPort, workerData } = require('node:worker_threads');
const { sab, index, mode } = workerData;
const w = new Int32Array(sab);
const ACKS = ${REF.ACKS}, STOP = ${REF.STOP}, SPIN = ${REF.SPIN}, DB = ${REF.DOORBELLS} + index;
if (mode === 'spin-range') {
  const base = ${RANGE.BASE} + index * ${RANGE.STRIDE}, slot = base + ${RANGE.SLOT};
  let seen = 0, sink = 0;
  for (;;) {
    let v = Atomics.load(w, base);
    for (let i = Atomics.load(w, SPIN); v === seen && i > 0; i--) v = Atomics.load(w, base);
    if (v === seen) { Atomics.wait(w, base, seen); v = Atomics.load(w, base); }
    if (Atomics.load(w, STOP)) break;
    if (v === seen) continue;
    seen = v;
    if (v & 1) {
      // The id first (the publisher stores it last), then the range words, then the answer.
      sink += Atomics.load(w, slot);
      for (let k = 1; k < ${RANGE.ANSWER}; k++) sink += w[slot + k];
      Atomics.store(w, slot + ${RANGE.ANSWER}, 1);
      Atomics.add(w, ACKS, 1);
      Atomics.notify(w, ACKS);
    }
  }
  if (sink === 0.5) console.log(sink); // keeps the reads
} else if (mode === 'postMessage') {
  parentPort.on('message', (m) => {
    if (m.t === 'start') parentPort.postMessage({ t: 'ack', seq: m.seq });
    else if (m.t === 'stop') process.exit(0);
    // 'end' is one-way: nothing to answer.
  });
} else {
  let seen = 0;
  for (;;) {
    // Doorbell odd = start published, even = end published (one word, one writer: the publisher).
    let v = Atomics.load(w, DB);
    if (mode === 'spin') for (let i = Atomics.load(w, SPIN); v === seen && i > 0; i--) v = Atomics.load(w, DB);
    if (v === seen) { Atomics.wait(w, DB, seen); v = Atomics.load(w, DB); }
    if (Atomics.load(w, STOP)) break;
    if (v === seen) continue;
    seen = v;
    // ACK after reading the start: the publisher's wait on ACKS sees every acknowledgement.
    if (v & 1) { Atomics.add(w, ACKS, 1); Atomics.notify(w, ACKS); }
  }
}
`;

export class ReferenceFanout {
  readonly words: Int32Array;
  private readonly workers: Worker[] = [];
  private readonly online: Array<Promise<unknown>> = [];
  private acksTarget = 0;
  private seq = 0;

  constructor(
    readonly mode: RefMode,
    readonly n: number,
    readonly spin = 2000,
  ) {
    // Line-aligned, as the product's mailboxes are (see alignedSab): a reference whose words
    // straddle a line boundary would be slower than it should.
    const words = Math.max(REF.DOORBELLS + n, RANGE.BASE + n * RANGE.STRIDE);
    this.words = new Int32Array(alignedSab(words * 4), 0, words);
    Atomics.store(this.words, REF.VERSION, REF_VERSION);
    Atomics.store(this.words, REF.SPIN, spin);
    for (let i = 0; i < n; i++) {
      const w = new Worker(WORKER_SRC, { eval: true, workerData: { sab: this.words.buffer, index: i, mode } });
      this.online.push(new Promise((r) => w.once('online', r)));
      this.workers.push(w);
    }
  }

  async ready(): Promise<void> {
    await Promise.all(this.online);
    // One round each so every worker is parked in its loop.
    for (let i = 0; i < 10; i++) await this.round();
  }

  /** One round: publish start to all, wait for every ack, publish end. Returns microseconds. */
  round(): number | Promise<number> {
    if (this.mode === 'postMessage') return this.roundMessage();
    if (this.mode === 'waitAsync') return this.roundAsync();
    if (this.mode === 'spin-range') return this.roundRange();
    return this.roundAtomics();
  }

  /** Worker i's doorbell word (spin-range keeps each on its own line, before its call slot). */
  private doorbell(i: number): number {
    return this.mode === 'spin-range' ? RANGE.BASE + i * RANGE.STRIDE : REF.DOORBELLS + i;
  }

  /**
   * Rings every worker's doorbell with `value` (odd: a start, even: the end of round `seq`). The
   * value is the whole message (spin-range's starts also fill the call slot first: `fill`); the
   * notify wakes a parked worker.
   */
  private publish(value: number, fill?: (i: number) => void): void {
    const w = this.words;
    for (let i = 0; i < this.n; i++) {
      fill?.(i);
      Atomics.store(w, this.doorbell(i), value);
      Atomics.notify(w, this.doorbell(i), 1);
    }
  }

  /** Blocks until ACKS reaches the round's target, from the value `v` last seen. */
  private parkForAcks(v: number): void {
    // ACKS only grows; waiting on the value last seen never misses an ack (it changes the word).
    while (v < this.acksTarget) {
      Atomics.wait(this.words, REF.ACKS, v);
      v = Atomics.load(this.words, REF.ACKS);
    }
  }

  private async roundAsync(): Promise<number> {
    const w = this.words;
    const t = process.hrtime.bigint();
    this.seq++;
    this.acksTarget += this.n;
    this.publish(2 * this.seq - 1);
    // As in roundAtomics: ACKS only grows, so a wait on the value last seen returns at once
    // ("not-equal") if an ack landed in between. A pending waitAsync does not keep the process
    // alive; the workers (ref'd) do.
    let v = Atomics.load(w, REF.ACKS);
    while (v < this.acksTarget) {
      const r = Atomics.waitAsync(w, REF.ACKS, v);
      if (r.async) await r.value;
      v = Atomics.load(w, REF.ACKS);
    }
    this.publish(2 * this.seq);
    return usSince(t);
  }

  private roundAtomics(): number {
    const w = this.words;
    const t = process.hrtime.bigint();
    this.seq++;
    this.acksTarget += this.n;
    this.publish(2 * this.seq - 1);
    let v = Atomics.load(w, REF.ACKS);
    if (this.mode === 'spin') for (let i = this.spin; v < this.acksTarget && i > 0; i--) v = Atomics.load(w, REF.ACKS);
    this.parkForAcks(v);
    this.publish(2 * this.seq); // the end is one-way
    return usSince(t);
  }

  private roundRange(): number {
    const w = this.words;
    const t = process.hrtime.bigint();
    this.seq++;
    this.acksTarget += this.n;
    const seq = this.seq;
    // A range's words (start, end, event, flags, owner, seq, pid, tick, origin...), the answer
    // cleared, the id last: the worker loads the id first.
    this.publish(2 * seq - 1, (i) => {
      const slot = RANGE.BASE + i * RANGE.STRIDE + RANGE.SLOT;
      for (let k = 1; k < RANGE.ANSWER; k++) w[slot + k] = seq + k;
      Atomics.store(w, slot + RANGE.ANSWER, 0);
      Atomics.store(w, slot, seq);
    });
    // Poll the answer words, as the kernel does; then park on ACKS.
    let first = 0;
    for (let i = this.spin; first < this.n && i > 0; i--) {
      while (first < this.n && Atomics.load(w, RANGE.BASE + first * RANGE.STRIDE + RANGE.SLOT + RANGE.ANSWER) !== 0) first++;
    }
    // Every answer seen: done (a worker's ACKS add may still be on its way; a later park counts it).
    if (first < this.n) this.parkForAcks(Atomics.load(w, REF.ACKS));
    this.publish(2 * seq);
    return usSince(t);
  }

  private roundMessage(): Promise<number> {
    const t = process.hrtime.bigint();
    const seq = ++this.seq;
    let left = this.n;
    return new Promise<number>((resolve) => {
      const onAck = (): void => {
        if (--left > 0) return;
        for (const w of this.workers) w.off('message', onAck);
        for (const w of this.workers) w.postMessage({ t: 'end', seq });
        resolve(usSince(t));
      };
      for (const w of this.workers) {
        w.on('message', onAck);
        w.postMessage({ t: 'start', seq });
      }
    });
  }

  async close(): Promise<void> {
    Atomics.store(this.words, REF.STOP, 1);
    for (let i = 0; i < this.n; i++) {
      Atomics.add(this.words, this.doorbell(i), 2);
      Atomics.notify(this.words, this.doorbell(i));
    }
    if (this.mode === 'postMessage') for (const w of this.workers) w.postMessage({ t: 'stop' });
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
