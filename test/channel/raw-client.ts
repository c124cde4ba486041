/**
 * A bare notifier-channel client for tests that must send any frame, in any order, and see every
 * frame the server sends (ids included), which the SDK hides on purpose.
 */
import WebSocket from 'ws';
import { decodeServerFrame, encodeClientFrame, type ClientFrameIn, type ServerFrame } from '../../src/channel/codec.js';

export class RawClient {
  readonly frames: ServerFrame[] = [];
  /** Resolves with the close code and reason when the socket closes. */
  readonly closed: Promise<{ code: number; reason: string }>;
  private nextId = 1;
  private waiters: Array<() => void> = [];
  /** Called with every frame as it arrives (an automatic responder). */
  onFrame: ((f: ServerFrame) => void) | null = null;

  private constructor(readonly ws: WebSocket) {
    ws.binaryType = 'nodebuffer';
    ws.on('message', (d: Buffer) => {
      const f = decodeServerFrame(d);
      this.frames.push(f);
      this.onFrame?.(f);
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
    void this.closed.then(() => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /**
   * Opens a socket (the token, if any, goes in `Authorization: Bearer` on the upgrade). Rejects
   * with `{ status }` if the upgrade is refused.
   */
  static open(url: string, headerToken?: string): Promise<RawClient> {
    const ws = new WebSocket(url, { headers: headerToken ? { authorization: `Bearer ${headerToken}` } : {}, perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => reject(Object.assign(new Error(`upgrade refused: HTTP ${res.statusCode}`), { status: res.statusCode, body })));
      });
      ws.once('error', (e) => reject(e));
    });
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(f: ClientFrameIn): void {
    this.ws.send(encodeClientFrame(f));
  }

  /** Sends a Hello and resolves with the Welcome. */
  async hello(token = '', extra: Record<string, unknown> = {}): Promise<Extract<ServerFrame, { body: 'welcome' }>['welcome']> {
    this.send({ hello: { protocolVersions: [1], token, ...extra } });
    const f = await this.next((x) => x.body === 'welcome');
    return (f as Extract<ServerFrame, { body: 'welcome' }>).welcome;
  }

  /** Sends a request (a fresh request id) and resolves with the frame that answers it. */
  async request(f: ClientFrameIn, timeoutMs = 10_000): Promise<ServerFrame> {
    const requestId = this.nextId++;
    this.send({ ...f, requestId });
    return this.next((x) => Number(x.requestId) === requestId, timeoutMs);
  }

  /** The first frame (already received or still to come) that matches, or a rejection. */
  next(match: (f: ServerFrame) => boolean, timeoutMs = 10_000): Promise<ServerFrame> {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const look = (): void => {
        const f = this.frames.find(match);
        if (f) return resolve(f);
        if (this.ws.readyState === WebSocket.CLOSED) return reject(new Error('the socket closed before the frame came'));
        const left = deadline - Date.now();
        if (left <= 0) return reject(new Error(`no matching frame within ${timeoutMs} ms`));
        const t = setTimeout(look, left);
        this.waiters.push(() => {
          clearTimeout(t);
          look();
        });
      };
      look();
    });
  }

  terminate(): void {
    this.ws.terminate();
  }
}
