/**
 * bench:channel — the notifier channel to external clients in other processes.
 *
 * 1. One external client: the full invalidate round (InvalidateStart to the client, its
 *    InvalidateAck back, the kernel's wait, InvalidateEnd sent) against the floor measured in the
 *    same run: a bare `ws` echo of a frame of the same size on the same loopback.
 * 2. Fan-out to N = 1, 10, 100, 1000 external clients, multiplexed over at most four client
 *    processes: one CLEAR hits every client's subscription; the round ends when all have answered.
 *    Against the floor at the same N, same run: a bare `ws` fan-out of a frame of the same size to
 *    N connections over the same number of processes, each echoing it (one write and one read per
 *    connection and round on each side, as a round needs at least).
 *
 * Options: --ns=1,10,100,1000 --rounds=2000 (at N = 1; fewer at larger N) --json=path
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Service } from '../src/service.js';
import { buildServer } from '../src/http/server.js';
import { PROT } from '../src/kernel/kernel.js';
import { MmuNotifierEvent } from '../src/notifier/range.js';
import { encodeServerFrame } from '../src/channel/codec.js';
import { fmt, machine, percentiles, table, usSince, type Percentiles } from './lib/stats.js';
import { startClientProcesses, wsEchoFloor, wsFanoutFloor } from '../src/loadgen/client-processes.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const NS = (args.get('ns') ?? '1,10,100,1000').split(',').map(Number);
const ROUNDS = Number(args.get('rounds') ?? 2000);
const PAGE = 4096;
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

interface Row {
  n: number;
  /** The floor row this one is compared with (the same N). */
  floor?: Row;
  variant: string;
  rounds: number;
  lat: Percentiles;
  perSec: number;
}

async function measure(rounds: number, round: () => Promise<number>): Promise<{ lat: Percentiles; perSec: number }> {
  for (let i = 0; i < Math.min(200, rounds / 10); i++) await round();
  const samples = new Float64Array(rounds);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    samples[i] = await round();
    if (i % 64 === 63) await tick();
  }
  const secs = usSince(t0) / 1e6;
  return { lat: percentiles(samples), perSec: Math.round(rounds / secs) };
}

/** The floor: a frame of `size` bytes echoed by a bare ws client in another process. */
async function echoFloor(size: number, rounds: number): Promise<Row> {
  const lat = await wsEchoFloor(size, rounds);
  // Round trips are sequential: the rate is the inverse of the mean.
  return { n: 1, variant: `ws echo of ${size} B (floor)`, rounds, lat, perSec: Math.round(1e6 / lat.mean) };
}

async function fanout(n: number, rounds: number): Promise<Row & { extra: Record<string, unknown> }> {
  const svc = new Service({ kernel: { memoryBytes: 64 * 1024 * 1024 }, channel: { maxSubscriptions: 4096 }, deadlineMs: 60_000 });
  const app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  const k = svc.kernel;
  const p = k.createProcess('bench');
  const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE });
  const procs = Math.min(4, n);
  const children: ChildProcess[] = [];
  try {
    children.push(...(await startClientProcesses(`ws://127.0.0.1:${port}/v1/notifier/ws`, 'devmirror-local', p.pid, a, 16 * PAGE, n)));
    const live = svc.channel.list().filter((d) => d.alive && d.subs.size > 0).length;
    if (live !== n) throw new Error(`expected ${n} subscribed clients, have ${live}`);
    const m = await measure(rounds, async () => {
      const t = process.hrtime.bigint();
      const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
      k.notifyEnd(p.mm, r);
      return usSince(t);
    });
    let acks = 0;
    let evictions = 0;
    for (const d of svc.channel.list()) {
      acks += d.handshake.acks;
      evictions += d.handshake.evictions;
    }
    return { n, variant: `devmirror, ${n} client${n > 1 ? 's' : ''} / ${procs} process${procs > 1 ? 'es' : ''}`, rounds, ...m, extra: { acks, evictions } };
  } finally {
    for (const c of children) c.stdin!.end();
    await svc.stop();
    await app.close();
  }
}

async function main(): Promise<void> {
  const config = {
    bench: 'channel',
    machine: machine(),
    transport: 'protobuf over WebSocket (ws, no compression), loopback, clients in separate Node processes',
    clients: 'DeviceClient, one interval subscription each over a 16-page window, acknowledging every start at once',
    event: 'CLEAR of one page inside the window (every client is hit)',
    sanitizer: 'on (server-side shadow of every external mirror)',
    kernelWait: 'the kernel thread never blocks: acknowledgements arrive as frames on its event loop',
    ns: NS,
    roundsAtN1: ROUNDS,
  };
  console.log(JSON.stringify(config, null, 2));
  const startFrame = encodeServerFrame({
    invalidateStart: { invalidationId: 123456, subscriptionId: 1_000_001, pid: 100, start: 0x7f0000000000, end: 0x7f0000001000, event: 1, flags: 1, blockable: true, curSeq: 12345, origin: { operation: 'madvise' } },
  });
  const rows: Row[] = [];
  const floor = await echoFloor(startFrame.length, ROUNDS);
  rows.push(floor);
  const extras: Record<number, unknown> = {};
  for (const n of NS) {
    const rounds = n === 1 ? ROUNDS : n <= 10 ? Math.ceil(ROUNDS / 2) : n <= 100 ? Math.ceil(ROUNDS / 8) : Math.ceil(ROUNDS / 20);
    let nFloor = floor;
    if (n > 1) {
      const procs = Math.min(4, n);
      nFloor = { n, variant: `ws fan-out of ${startFrame.length} B, ${n} connections / ${procs} processes (floor)`, rounds, lat: await wsFanoutFloor(startFrame.length, n, rounds), perSec: 0 };
      nFloor.perSec = Math.round(1e6 / nFloor.lat.mean);
      rows.push(nFloor);
    }
    const r = await fanout(n, rounds);
    extras[n] = r.extra;
    rows.push({ ...r, floor: nFloor });
    console.log(`  N=${n}: ${JSON.stringify(r.extra)}`);
  }
  const out = rows.map((r) => ({
    N: r.n,
    variant: r.variant,
    rounds: r.rounds,
    p50: fmt(r.lat.p50),
    p90: fmt(r.lat.p90),
    p99: fmt(r.lat.p99),
    p99_9: fmt(r.lat.p99_9),
    max: fmt(r.lat.max),
    'rounds/s': r.perSec.toLocaleString('en-US'),
    'p50/floor': r.floor ? (r.lat.p50 / r.floor.lat.p50).toFixed(2) : '1.00',
    'p99/floor': r.floor ? (r.lat.p99 / r.floor.lat.p99).toFixed(2) : '1.00',
  }));
  console.log(`\nframe size: InvalidateStart ServerFrame = ${startFrame.length} bytes (the floor echoes a frame of this size)\n`);
  console.log(table(out));
  const n1 = rows.find((r) => r.n === 1 && r.floor !== undefined);
  const n1000 = rows.find((r) => r.n === 1000 && r.floor !== undefined);
  console.log('\ngoals:');
  if (n1) console.log(`  N=1 p50 within 1.3x of the ws echo floor: ${(n1.lat.p50 / floor.lat.p50).toFixed(2)}x -> ${n1.lat.p50 <= 1.3 * floor.lat.p50 ? 'met' : 'NOT met'}`);
  if (n1000) {
    console.log(`  N=1000 p99 under 50 ms: ${fmt(n1000.lat.p99)} -> ${n1000.lat.p99 < 50_000 ? 'met' : 'NOT met'}`);
    const f = n1000.floor!;
    console.log(`    the bare ws fan-out to 1000 connections in the same run: p50 ${fmt(f.lat.p50)}, p99 ${fmt(f.lat.p99)}${f.lat.p99 >= 50_000 ? ' (the floor itself misses 50 ms)' : ''}`);
  }
  const json = args.get('json');
  if (json) writeFileSync(json, JSON.stringify({ config, rows: rows.map(({ floor: f, ...r }) => ({ ...r, floorVariant: f?.variant ?? null })), extras }, null, 2));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
