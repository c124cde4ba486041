/**
 * An in-memory WebSocket pair for the explorer: the real DeviceClient on one end, the real channel
 * Session on the other, the same protobuf frames in between, but every frame waits in the
 * scheduler until it is picked. Each direction is one queue (one key), so frames of a connection
 * stay in order, as they do on a TCP connection; what the scheduler chooses is when each side's
 * next frame arrives relative to everything else.
 */
import { Buffer } from 'node:buffer';
import { EventEmitter } from 'node:events';
import type { WebSocket } from 'ws';
import { decodeClientFrame, decodeServerFrame } from '../channel/codec.js';
import type { Scheduler } from './scheduler.js';
import { EVENT_NAMES } from '../notifier/range.js';

const OPEN = 1;
const CLOSED = 3;

/** A frame in a step list: its kind and the fields that tell it apart. */
function describe(data: Uint8Array, fromClient: boolean): string {
  try {
    const f = (fromClient ? decodeClientFrame(data) : decodeServerFrame(data)) as unknown as Record<string, unknown> & { body?: string };
    const body = f.body ?? '?';
    const m = (body && (f[body] as Record<string, unknown> | undefined)) || {};
    const hex = (v: unknown): string => (typeof v === 'number' || typeof v === 'bigint' ? `0x${v.toString(16)}` : String(v));
    const parts: string[] = [];
    if (m.invalidationId !== undefined) parts.push(`inv#${String(m.invalidationId)}`);
    if (m.event !== undefined && (body === 'invalidateStart' || body === 'invalidateEnd')) parts.push(EVENT_NAMES[Number(m.event)] ?? String(m.event));
    if (body === 'invalidateStart') parts.push(`from ${originName(m.origin)}`);
    if (m.start !== undefined && m.end !== undefined) parts.push(`[${hex(m.start)}, ${hex(m.end)})`);
    else if (m.addr !== undefined) parts.push(hex(m.addr));
    if (body === 'dma') parts.push(m.write === true ? `write pfn ${String(m.pfn)}` : `read pfn ${String(m.pfn)}`);
    if (body === 'rangeFault' || body === 'readBeginReply') parts.push(`seq ${String(m.notifierSeq ?? m.seq)}`);
    if (body === 'rangeFaultReply' || body === 'dmaReply') parts.push(`errno ${String(m.error)}`);
    if (body === 'dmaReply' && m.finding) parts.push(`FINDING ${String(m.finding)}`);
    if (m.ok === false) parts.push('refused');
    return [body, ...parts.filter(Boolean)].join(' ');
  } catch {
    return `${data.length}-byte frame`;
  }
}
function originName(o: unknown): string {
  const op = (o as { operation?: string } | null)?.operation;
  return op || '?';
}

class PipeEnd extends EventEmitter {
  readyState = OPEN;
  binaryType = 'nodebuffer';
  readonly bufferedAmount = 0;
  peer!: PipeEnd;

  constructor(
    private readonly sched: Scheduler,
    /** The scheduler key of frames this end sends, e.g. "gpu0→kernel". */
    readonly key: string,
    private readonly fromClient: boolean,
    private readonly pair: { closed: boolean; close(code: number, reason: string): void },
  ) {
    super();
  }

  send(data: Uint8Array): void {
    if (this.readyState !== OPEN) return;
    const copy = Buffer.from(data);
    const peer = this.peer;
    this.sched.enqueue(this.key, `${this.key} ${describe(copy, this.fromClient)}`, () => {
      if (peer.readyState === OPEN) peer.emit('message', copy, true);
    });
  }

  close(code = 1000, reason = ''): void {
    this.pair.close(code, reason);
  }

  terminate(): void {
    this.pair.close(1006, '');
  }

  ping(): void {
    // No heartbeat failures in memory: the peer is alive for as long as the pair is open.
    queueMicrotask(() => this.emit('pong'));
  }
}

export interface PipePair {
  /** The device's end (DeviceClientOptions.socket). */
  client: WebSocket;
  /** The kernel's end (ChannelServer.adopt). */
  server: WebSocket;
  readonly closed: boolean;
}

/** A connected pair; the client end says 'open' on the next microtask, as a dial would. */
export function pipePair(sched: Scheduler, device: string): PipePair {
  const state = {
    closed: false,
    close(code: number, reason: string): void {
      if (state.closed) return;
      state.closed = true;
      client.readyState = CLOSED;
      server.readyState = CLOSED;
      // Frames still in flight are lost with the connection.
      sched.drop((k) => k === client.key || k === server.key);
      queueMicrotask(() => {
        client.emit('close', code, Buffer.from(reason));
        server.emit('close', code, Buffer.from(reason));
      });
    },
  };
  const client = new PipeEnd(sched, `${device}→kernel`, true, state);
  const server = new PipeEnd(sched, `kernel→${device}`, false, state);
  client.peer = server;
  server.peer = client;
  queueMicrotask(() => client.emit('open'));
  return {
    client: client as unknown as WebSocket,
    server: server as unknown as WebSocket,
    get closed() {
      return state.closed;
    },
  };
}
