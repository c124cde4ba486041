/**
 * External client processes for load tests (src/loadgen/channel-clients.ts, run with Node; with
 * tsx when running from the TypeScript sources), and the bare `ws` echo floor measured against one.
 */
import process from 'node:process';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WebSocketServer, type WebSocket } from 'ws';
import { percentiles, usSince, type Percentiles } from '../lib/stats.js';

/**
 * The hot codec (src/channel/hot-frames.ts) as a module instance of the protocol floor's own: a
 * module URL with a query is a module of its own, with its own functions. The floor and the
 * Sessions of a service in the same process then do not share the codec's functions, nor the type
 * feedback and optimized code that come with them: beside a floor that shared them, devmirror's N =
 * 1 round measured 2 to 6% slower than beside one that did not (Xeon host, 11-29, in both orders,
 * bench/experiments/floor-sharing.mjs). A service never runs a floor beside itself; the benchmark
 * should not make it pay for one.
 */
type HotCodec = typeof import('../channel/hot-frames.js');
function privateHotCodec(): Promise<HotCodec> {
  return import(new URL('../channel/hot-frames.js?instance=protocol-floor', import.meta.url).href) as Promise<HotCodec>;
}

function clientArgs(): string[] {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return ['--import', 'tsx', fileURLToPath(new URL('./channel-clients.ts', here))];
  return [fileURLToPath(new URL('./channel-clients.js', here))];
}

/** Starts a client process and resolves once it printed "ready"; end its stdin to stop it. */
export function spawnClients(argv: string[]): Promise<ChildProcess> {
  const c = spawn(process.execPath, [...clientArgs(), ...argv], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    c.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve(c);
    });
    c.once('exit', (code) => reject(new Error(`client process exited with ${code}`)));
  });
}

/** `total` clients over at most `maxProcs` processes, each connection with one interval subscription. */
export async function startClientProcesses(url: string, token: string, pid: number, start: number, length: number, total: number, maxProcs = 4): Promise<ChildProcess[]> {
  const procs = Math.min(maxProcs, total);
  const out: ChildProcess[] = [];
  for (let i = 0; i < procs; i++) {
    const count = Math.floor(total / procs) + (i < total % procs ? 1 : 0);
    out.push(await spawnClients(['clients', url, token, String(pid), String(start), String(length), String(count)]));
  }
  return out;
}

export function stopClientProcesses(children: ChildProcess[]): void {
  for (const c of children) c.stdin?.end();
}

/** An open fan-out floor: `round()` sends one frame to every connection and resolves with microseconds once every echo is in. */
export interface FanoutFloor {
  readonly connections: number;
  /** The echoing client processes' ids (a bench may pin them). */
  readonly pids: readonly number[];
  round(): Promise<number>;
  close(): Promise<void>;
}

/**
 * The fan-out floor: a frame of `size` bytes sent to `n` bare `ws` connections spread over at most
 * `maxProcs` processes (the same layout as the devmirror clients), each echoing it back; a round
 * ends when every echo is in. One write and one read per connection and round on each side, no
 * codec, no kernel: what the loopback, the scheduler and `ws` cost on this machine. Kept open so a
 * bench can interleave its rounds with the system's, block by block, on the same machine state.
 */
export async function openFanoutFloor(size: number, n: number, maxProcs = 4): Promise<FanoutFloor> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, backlog: 2048 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const port = (wss.address() as { port: number }).port;
  const conns: WebSocket[] = [];
  let pending = 0;
  let done: (() => void) | null = null;
  wss.on('connection', (ws) => {
    conns.push(ws);
    ws.on('message', () => {
      if (--pending === 0) done?.();
    });
  });
  const procs = Math.min(maxProcs, n);
  const children: ChildProcess[] = [];
  const frame = new Uint8Array(size).fill(7);
  const close = async (): Promise<void> => {
    stopClientProcesses(children);
    for (const ws of conns) ws.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
  };
  try {
    for (let i = 0; i < procs; i++) {
      const count = Math.floor(n / procs) + (i < n % procs ? 1 : 0);
      children.push(await spawnClients(['echo', `ws://127.0.0.1:${port}`, String(count)]));
    }
    if (conns.length !== n) throw new Error(`fan-out floor: expected ${n} connections, have ${conns.length}`);
  } catch (e) {
    await close();
    throw e;
  }
  return {
    connections: n,
    pids: children.map((c) => c.pid as number),
    round: () => {
      const t = process.hrtime.bigint();
      return new Promise<number>((resolve) => {
        pending = conns.length;
        done = () => resolve(usSince(t));
        for (const ws of conns) ws.send(frame);
      });
    },
    close,
  };
}

/**
 * The protocol floor at N = 1: the least a round of the notifier protocol needs, on the same
 * loopback, without devmirror's kernel, notifier core, device or sessions. This process encodes an
 * InvalidateStart from its fields (the hot encoder a Session uses); one client process
 * (channel-clients.ts `protocol`) decodes it as DeviceClient does and answers with an InvalidateAck;
 * the ack is decoded here (the Session's reader) and ends the round. The Start is written at once
 * (a Session holds a start only until the kernel has called every subscriber, which here is
 * none). With `end` (the default) an InvalidateEnd is encoded then and leaves with the next Start
 * in one write (the socket corked until the next tick, as a Session sends an End); with `end:
 * false` there is none, as for an interval subscription made with no_end (the DeviceClients of
 * startClientProcesses); with `cork: false` the End is written at once too. Against the ws echo,
 * it tells how much of a round's ratio the protocol itself takes on this machine (the codec, and
 * the End if any) and how much is devmirror's code.
 */
export async function openProtocolFloor(o: { end?: boolean; cork?: boolean } = {}): Promise<FanoutFloor> {
  const { decodeAckFields, encodeEndFields, encodeStartFields } = await privateHotCodec();
  const withEnd = o.end ?? true;
  const withCork = o.cork ?? true;
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const port = (wss.address() as { port: number }).port;
  let conn: WebSocket | null = null;
  wss.on('connection', (ws) => (conn = ws));
  const children: ChildProcess[] = [];
  const close = async (): Promise<void> => {
    stopClientProcesses(children);
    conn?.terminate();
    await new Promise<void>((r) => wss.close(() => r()));
  };
  try {
    children.push(await spawnClients(['protocol', `ws://127.0.0.1:${port}`]));
    if (conn === null) throw new Error('protocol floor: the client did not connect');
  } catch (e) {
    await close();
    throw e;
  }
  const ws = conn as WebSocket;
  const sock = (ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
  let corked = false;
  /** An End: the socket corked until the next tick, so that the next Start joins its write. */
  const sendEnd = (frame: Uint8Array): void => {
    if (withCork && !corked) {
      corked = true;
      sock.cork();
      process.nextTick(() => {
        corked = false;
        sock.uncork();
      });
    }
    ws.send(frame);
  };
  const BASE = 0x7f0000000000;
  let id = 0;
  let done: ((ackId: number) => void) | null = null;
  ws.on('message', (data: Buffer) => {
    const a = decodeAckFields(data);
    if (a !== null) done?.(a.invalidationId);
  });
  return {
    connections: 1,
    pids: children.map((c) => c.pid as number),
    round: () => {
      const t = process.hrtime.bigint();
      const me = ++id;
      return new Promise<void>((resolve, reject) => {
        done = (ackId) => (ackId === me ? resolve() : reject(new Error(`protocol floor: ack for ${ackId}, expected ${me}`)));
        ws.send(encodeStartFields(me, 1, 100, BASE, BASE + 4096, 1, 1, null, 2 * me, 'madvise')!);
      }).then(() => {
        // In a reaction, as the kernel's end follows its await: a tick queued inside the socket's
        // read callback would run before the microtasks and write the End alone, and the next
        // Start in a second write (the Session's End leaves with the next Start in one).
        if (withEnd) sendEnd(encodeEndFields(me, 1, 100, BASE, BASE + 4096, 1, 1, null)!);
        return usSince(t);
      });
    },
    close,
  };
}

/** The floor measured on its own: `warm` rounds, then `rounds` measured (the event loop turns every 64). */
export async function wsFanoutFloor(size: number, n: number, rounds: number, maxProcs = 4, warm = Math.min(200, rounds / 10)): Promise<Percentiles> {
  const floor = await openFanoutFloor(size, n, maxProcs);
  try {
    for (let i = 0; i < warm; i++) await floor.round();
    const samples = new Float64Array(rounds);
    for (let i = 0; i < rounds; i++) {
      samples[i] = await floor.round();
      if (i % 64 === 63) await new Promise((r) => setImmediate(r));
    }
    return percentiles(samples);
  } finally {
    await floor.close();
  }
}

/** The floor at N = 1: a frame of `size` bytes echoed by a bare ws client in another process, `rounds` times. */
export function wsEchoFloor(size: number, rounds: number, warm?: number): Promise<Percentiles> {
  return wsFanoutFloor(size, 1, rounds, 1, warm);
}
