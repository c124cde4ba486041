/**
 * The notifier channel endpoint, `/v1/notifier/ws` on the kernel's HTTP server: accepts WebSocket
 * upgrades (a token in `Authorization: Bearer` or `?token=` is checked before the upgrade; one in
 * the Hello after it), runs one Session per connection and keeps the external devices it created.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Logger } from 'pino';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Kernel } from '../kernel/kernel.js';
import { CLOSE } from './close-codes.js';
import type { ExternalDevice } from './external-device.js';
import { DEFAULT_LIMITS, Session, type ChannelLimits, type SessionHost } from './session.js';
import { SocketAckGroup } from './socket-ack.js';
import { TokenTable } from './tokens.js';
import type { Finding } from '../sanitizer/sanitizer.js';

export const CHANNEL_PATH = '/v1/notifier/ws';

export interface ChannelOptions {
  tokens?: TokenTable;
  limits?: Partial<ChannelLimits>;
  /** Device ids shared with the worker devices (owner values must not collide). */
  allocateId?: () => number;
  log?: SessionHost['log'];
  /** Resolves device-worker tokens (workers subscribe through the channel). */
  bindWorker?: SessionHost['bindWorker'];
  /** pino logger: each external device logs through a child of it. */
  logger?: Logger;
}

let fallbackId = 10_000;

export class ChannelServer implements SessionHost {
  readonly tokens: TokenTable;
  readonly limits: ChannelLimits;
  readonly group = new SocketAckGroup();
  readonly wss: WebSocketServer;
  readonly sessions = new Set<Session>();
  /** External devices by id, including disconnected and evicted ones (for listing). */
  readonly devices = new Map<number, ExternalDevice>();
  readonly log: SessionHost['log'];
  private readonly alloc: () => number;
  readonly bindWorker: SessionHost['bindWorker'];
  private readonly logger: Logger | undefined;
  onFinding: ((d: ExternalDevice, f: Finding) => void) | null = null;
  onChange: ((d: ExternalDevice) => void) | null = null;
  private server: Server | null = null;
  private closing = false;

  constructor(
    readonly kernel: Kernel,
    opts: ChannelOptions = {},
  ) {
    this.tokens = opts.tokens ?? TokenTable.parse(undefined);
    // An option given as undefined keeps its default (Service passes `deadlineMs: undefined` when
    // it has none: spreading it would have switched the acknowledgement deadline off).
    const given = Object.fromEntries(Object.entries(opts.limits ?? {}).filter(([, v]) => v !== undefined));
    this.limits = { ...DEFAULT_LIMITS, ...given };
    this.alloc = opts.allocateId ?? (() => fallbackId++);
    this.log = opts.log ?? (() => undefined);
    this.bindWorker = opts.bindWorker ?? (() => null);
    this.logger = opts.logger;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.limits.maxPayload, perMessageDeflate: false });
  }

  allocateId(): number {
    return this.alloc();
  }

  attached(dev: ExternalDevice, s: Session): void {
    this.devices.set(dev.id, dev);
    const child = this.logger?.child({ device: dev.name, deviceId: dev.id, kind: dev.kind, transport: 'external' });
    if (child) s.setLog((level, msg, data) => child[level](data ?? {}, msg));
    dev.onFinding = (d, f) => this.onFinding?.(d, f);
    dev.onStateChange = (d) => {
      this.sessions.delete(s);
      this.pruneClosed();
      this.onChange?.(d);
    };
    this.onChange?.(dev);
  }

  /** Disconnected and evicted devices beyond `keepClosedDevices` are forgotten, oldest first. */
  private pruneClosed(): void {
    let closed = 0;
    for (const d of this.devices.values()) if (!d.alive) closed++;
    for (const [id, d] of this.devices) {
      if (closed <= this.limits.keepClosedDevices) break;
      if (d.alive) continue;
      this.devices.delete(id);
      this.kernel.pagemaps.delete(id);
      closed--;
    }
  }

  connectionsOf(token: string, except: Session | null = null): number {
    let n = 0;
    for (const s of this.sessions) if (s !== except && s.state !== 'closed' && s.token === token) n++;
    return n;
  }

  /** Connections whose token has not been checked yet: no token at the upgrade, no Hello yet. */
  private unauthenticated(): number {
    let n = 0;
    for (const s of this.sessions) if (s.state === 'hello' && !s.checkedAtUpgrade) n++;
    return n;
  }

  private readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    const reject = (status: number, code: string, text: string): void => {
      const retry = status === 503 ? 'Retry-After: 1\r\n' : '';
      const reason = { 401: 'Unauthorized', 404: 'Not Found', 503: 'Service Unavailable' }[status] ?? 'Error';
      // Node handed the socket over without its HTTP error handler: a peer that resets it (a client
      // or device worker that gave up) raised an uncaught ECONNRESET, which ended the process.
      socket.on('error', () => socket.destroy());
      socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\n${retry}Content-Type: application/json\r\n\r\n${JSON.stringify({ code, message: text })}`);
    };
    if (url.pathname !== CHANNEL_PATH) {
      // Node hands every upgrade request to the 'upgrade' listeners: one nobody answers would hold
      // its socket open for good (a flood of them would bypass every limit). Unless another
      // endpoint listens too, it is refused here.
      if ((this.server?.listenerCount('upgrade') ?? 1) <= 1) reject(404, 'DM_ERR_NOT_FOUND', `no WebSocket endpoint at ${url.pathname}`);
      return;
    }
    if (this.closing) return reject(503, 'DM_ERR_CONFLICT', 'shutting down');
    const auth = req.headers.authorization;
    const token = auth?.startsWith('Bearer ') ? auth.slice(7).trim() : url.searchParams.get('token');
    // A token given at the upgrade is checked before any WebSocket exists.
    if (token && !this.tokens.check(token) && !this.bindWorker(token)) return reject(401, 'DM_ERR_UNAUTHORIZED', 'unknown token');
    // Connection floods are refused before any WebSocket (and its hello timer) exists.
    if (this.sessions.size >= this.limits.maxConnections) {
      return reject(503, 'DM_ERR_CHANNEL_LIMIT', `more than ${this.limits.maxConnections} connections`);
    }
    if (token && !token.startsWith('worker:') && this.connectionsOf(token) >= this.limits.maxConnectionsPerToken) {
      return reject(503, 'DM_ERR_CHANNEL_LIMIT', `more than ${this.limits.maxConnectionsPerToken} connections with this token`);
    }
    if (!token && this.unauthenticated() >= this.limits.maxUnauthenticated) {
      return reject(503, 'DM_ERR_CHANNEL_LIMIT', `more than ${this.limits.maxUnauthenticated} connections without a checked token: send it at the upgrade (Authorization: Bearer)`);
    }
    this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => this.adopt(ws, token, `${req.socket.remoteAddress}:${req.socket.remotePort}`));
  };

  /**
   * Serves one accepted connection: an upgraded WebSocket, or an in-memory socket of the
   * interleaving explorer (which checks nothing at an upgrade: the token, if any, comes in Hello).
   */
  adopt(ws: WebSocket, token: string | null, remote: string): Session {
    const s = new Session(ws, this, token, remote);
    this.sessions.add(s);
    ws.on('close', () => this.sessions.delete(s));
    return s;
  }

  attach(server: Server): void {
    this.server = server;
    server.on('upgrade', this.onUpgrade);
  }

  /** Closes every connection (1001) and the endpoint; outstanding acknowledgements are released. */
  async close(): Promise<void> {
    this.closing = true;
    this.server?.off('upgrade', this.onUpgrade);
    for (const s of [...this.sessions]) s.close(CLOSE.GOING_AWAY, 'server shutting down');
    for (const d of this.devices.values()) await d.gone('closed', 'server shutting down');
    await new Promise<void>((r) => this.wss.close(() => r()));
  }

  list(): ExternalDevice[] {
    return [...this.devices.values()];
  }
}
