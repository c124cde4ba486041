/**
 * Experiment: a pending-ack table that holds one entry at a time, as an external device's does at
 * N = 1 (a start adds the round's ack, its InvalidateAck takes it). A Map keyed by ackKey (a double
 * past the first thousand invalidations, or a small integer) against the slot SocketAckTable keeps
 * the newest ack in: a Map that goes from empty to one entry and back reallocates its table.
 *
 *   node bench/experiments/ack-table.mjs
 *
 * Used in src/channel/socket-ack.ts (SocketAckTable) and docs/benchmarks.md.
 */
const N = 3e6;
const m = new Map();
const ack = { invalidationId: 0, subscriptionId: 5 };
function mapDoubleKey() { let s = 0; for (let i = 1; i <= N; i++) { const k = i * 2097152 + 5; m.set(k, ack); s += m.get(k).subscriptionId; m.delete(k); } return s; }
function mapSmallKey() { let s = 0; for (let i = 1; i <= N; i++) { const k = (i & 0xfffff) * 8 + 5; m.set(k, ack); s += m.get(k).subscriptionId; m.delete(k); } return s; }
let newest = null;
function slot() { let s = 0; for (let i = 1; i <= N; i++) { ack.invalidationId = i; newest = ack; const n = newest; if (n !== null && n.invalidationId === i && n.subscriptionId === 5) { s += n.subscriptionId; newest = null; } } return s; }
for (let pass = 0; pass < 3; pass++) {
  for (const [name, f] of [['Map, double keys', mapDoubleKey], ['Map, small integer keys', mapSmallKey], ['slot', slot]]) {
    const t = process.hrtime.bigint();
    f();
    if (pass === 2) console.log(`${name.padEnd(24)} ${(Number(process.hrtime.bigint() - t) / N).toFixed(1)} ns for an add, a lookup and a removal`);
  }
}
