/**
 * Baselines measured in the same run as a bench, so that every headline is a ratio: the same
 * fan-out (publish to N workers, wait for every acknowledgement, publish end) with nothing else in
 * the way, as a bare Atomics round trip with blocking waits, with a spin before the wait, with the
 * publisher parked in Atomics.waitAsync (the only park a thread serving sockets may use), and as a
 * postMessage handshake (src/loadgen/references.ts). N is the number of devices of the run. With
 * external clients, also the ws echo of one frame and, for M > 1 clients, a bare ws fan-out to M
 * connections over the same number of processes (src/loadgen/client-processes.ts).
 */
import { percentiles, type Percentiles } from '../lib/stats.js';
import { ReferenceFanout, type RefMode } from './references.js';
import { wsEchoFloor, wsFanoutFloor } from './client-processes.js';

export interface Baselines {
  workers: number;
  atomicsBlocking: Percentiles;
  atomicsSpin: Percentiles;
  /** Publisher parks with Atomics.waitAsync (keeps its event loop), workers block. */
  atomicsWaitAsync: Percentiles;
  postMessage: Percentiles;
  /** With external clients: a bare ws echo of an InvalidateStart-sized frame (48 bytes). */
  wsEcho?: Percentiles;
  /** With M > 1 external clients: a bare ws fan-out of a 48-byte frame to M echoing connections. */
  wsFanout?: { clients: number; lat: Percentiles };
}

async function measure(mode: RefMode, n: number, rounds: number): Promise<Percentiles> {
  const ref = new ReferenceFanout(mode, n);
  try {
    await ref.ready();
    const samples = new Float64Array(rounds);
    for (let i = 0; i < rounds; i++) {
      samples[i] = await ref.round();
      if (i % 64 === 63) await new Promise((r) => setImmediate(r));
    }
    return percentiles(samples);
  } finally {
    await ref.close();
  }
}

export async function measureBaselines(workers: number, rounds = Math.max(200, Math.floor(4000 / Math.max(1, workers))), clients = 0): Promise<Baselines> {
  const n = Math.max(1, workers);
  const withWsEcho = clients > 0;
  return {
    workers: n,
    atomicsBlocking: await measure('blocking', n, rounds),
    atomicsSpin: await measure('spin', n, rounds),
    atomicsWaitAsync: await measure('waitAsync', n, rounds),
    postMessage: await measure('postMessage', n, rounds),
    ...(withWsEcho ? { wsEcho: await wsEchoFloor(48, rounds) } : {}),
    ...(clients > 1 ? { wsFanout: { clients, lat: await wsFanoutFloor(48, clients, Math.max(50, Math.min(rounds, Math.floor(20_000 / clients)))) } } : {}),
  };
}
