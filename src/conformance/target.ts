/**
 * The device under test and the service it is attached to, in the suite's four modes:
 *
 * - `url`: a device already attached to a running service, found by kind (and id or name);
 * - `command`: an embedded service on an ephemeral loopback port, and a client command started
 *   with the service's address in its environment (and in `{url}`-style placeholders);
 * - `builtin-worker`: an embedded service and the built-in personality as a worker thread;
 * - `builtin-external`: the same, as a `devmirror device` client process.
 *
 * In the embedded modes the suite owns the process the device mirrors (`conformance`, with one
 * named mapping, the window). In `url` mode it uses the device's process and a named mapping of it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { DevmirrorError } from '../errors.js';
import { Api, type DeviceInfo } from './api.js';
import { windowOptions } from '../client/resolve.js';
import type { DeviceKind } from '../devices/protocol.js';

export const PAGE = 4096;
/** Pages of the window the embedded modes create (each check owns a few of them). */
export const WINDOW_PAGES = 32;
export const PROCESS_NAME = 'conformance';
export const WINDOW_NAME = 'conformance';
export const LOCAL_TOKEN = 'devmirror-local';

export type Mode = 'url' | 'command' | 'builtin-worker' | 'builtin-external';

export interface TargetOptions {
  mode: Mode;
  kind: DeviceKind;
  url?: string;
  token?: string;
  /** url mode: the device's id or name (default: the only live device of the kind). */
  device?: string;
  /** url mode: the mapping of the device's process to use (default: its first named RW mapping of 16+ pages). */
  window?: string;
  command?: string;
  policy?: string;
  /** A deliberate bug mode applied to the device before the checks (the suite's self-test). */
  bug?: string;
  /** How long a launched client may take to attach, ms. */
  attachMs?: number;
  /** Receives the launched client's output (default: dropped). */
  clientOutput?: (chunk: string) => void;
}

export interface Window {
  start: number;
  end: number;
  name: string;
}

export class Target {
  api!: Api;
  pid = 0;
  window!: Window;
  /** The device under test (its id changes when an external device reattaches). */
  dev!: DeviceInfo;
  private app: FastifyInstance | null = null;
  private svc: { stop(): Promise<void> } | null = null;
  private child: ChildProcess | null = null;
  private childExit: Promise<void> | null = null;
  /** Whether the suite created the process (and may exit and recreate it). */
  ownsProcess = false;
  channelUrl = '';
  /** The last event id before the checks ran. */
  runSince = 0;

  constructor(readonly o: TargetOptions) {}

  get transport(): 'worker' | 'external' {
    return this.dev.transport;
  }
  get id(): number {
    return this.dev.id;
  }
  get pages(): number {
    return (this.window.end - this.window.start) / PAGE;
  }
  page(i: number): number {
    return this.window.start + i * PAGE;
  }

  async open(): Promise<void> {
    if (this.o.mode === 'url') return this.openUrl();
    await this.startService();
    await this.createProcess();
    if (this.o.mode === 'builtin-worker') {
      const options = windowOptions(this.o.kind, this.window);
      const r = await this.api.post<{ id: number }>('/v1/devices', { kind: this.o.kind, name: `conformance-${this.o.kind}`, pid: this.pid, policy: this.o.policy ?? 'faithful', options });
      this.dev = await this.api.device(r.id);
      return;
    }
    const command = this.o.mode === 'command' ? this.o.command! : builtinCommand(this.o.kind, this.o.policy);
    this.launch(command);
    this.dev = await this.waitAttached(null);
  }

  async close(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.pid) {
      // The client runs in its own process group (a shell command may have started children).
      try {
        process.kill(-this.child.pid, 'SIGTERM');
      } catch {
        this.child.kill('SIGTERM');
      }
      const t = setTimeout(() => {
        try {
          process.kill(-this.child!.pid!, 'SIGKILL');
        } catch {
          // gone already
        }
      }, 3000);
      await this.childExit;
      clearTimeout(t);
    }
    await this.svc?.stop().catch(() => undefined);
    await this.app?.close().catch(() => undefined);
  }

  /** Applies the bug mode (again after a reattachment: a new session starts a new personality). */
  async reapply(): Promise<void> {
    if (this.o.bug) await this.api.faults(this.dev.id, { bug: this.o.bug });
  }

  /** The device's current record (findings, state). */
  async refresh(): Promise<DeviceInfo> {
    this.dev = await this.api.device(this.dev.id);
    return this.dev;
  }

  // ---- url mode ----------------------------------------------------------------------------

  private async openUrl(): Promise<void> {
    const u = new URL(this.o.url!);
    this.channelUrl = u.toString();
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    this.api = new Api(u.origin, this.o.token);
    const all = (await this.api.devices()).filter((d) => d.kind === this.o.kind && alive(d.state));
    const want = this.o.device;
    const found = want === undefined ? all : all.filter((d) => String(d.id) === want || d.name === want);
    if (found.length === 0) throw new DevmirrorError('DM_ERR_NO_SUCH_DEVICE', `no live ${this.o.kind} device${want !== undefined ? ` matching ${want}` : ''} at ${u.origin}`);
    if (found.length > 1) throw new DevmirrorError('DM_ERR_CONFLICT', `${found.length} live ${this.o.kind} devices at ${u.origin} (${found.map((d) => `${d.id}:${d.name}`).join(', ')}): choose one with --device`);
    this.dev = found[0];
    const pid = this.dev.pid ?? this.dev.pids?.[0];
    if (pid === undefined) throw new DevmirrorError('DM_ERR_CONFLICT', `device ${this.dev.id} mirrors no process`);
    this.pid = pid;
    const maps = await this.api.get<{ items: Array<{ start: number; end: number; name: string | null; prot: string[]; flags: { anonymous: boolean } }> }>(`/v1/processes/${pid}/maps`);
    const m = this.o.window
      ? maps.items.find((v) => v.name === this.o.window)
      : maps.items.find((v) => v.name && v.prot.includes('write') && v.flags.anonymous && v.end - v.start >= 16 * PAGE);
    if (!m) throw new DevmirrorError('DM_ERR_NO_SUCH_PROCESS', `process ${pid} has no ${this.o.window ? `mapping named ${this.o.window}` : 'named read-write anonymous mapping of 16 pages or more'} (give --window)`);
    // The checks need at most WINDOW_PAGES pages; more would only slow the whole-window ones.
    this.window = { start: m.start, end: Math.min(m.end, m.start + WINDOW_PAGES * PAGE), name: m.name! };
  }

  // ---- embedded modes ----------------------------------------------------------------------

  private async startService(port = 0): Promise<void> {
    // Imported here: url mode needs none of the kernel.
    const { Service } = await import('../service.js');
    const { buildServer } = await import('../http/server.js');
    const svc = new Service({ kernel: { memoryBytes: 64 * 1024 * 1024, deviceMemoryBytes: 16 * 1024 * 1024 }, deadlineMs: 5000, progress: { watchdogMs: 2000 } });
    const app = await buildServer(svc, { logger: false });
    await app.listen({ host: '127.0.0.1', port });
    await svc.start();
    this.svc = svc;
    this.app = app;
    const addr = app.server.address();
    const bound = typeof addr === 'object' && addr ? addr.port : 0;
    this.api = new Api(`http://127.0.0.1:${bound}`, this.o.token ?? LOCAL_TOKEN);
    this.channelUrl = `ws://127.0.0.1:${bound}/v1/notifier/ws`;
  }

  /** Whether the suite runs the kernel service (and may restart it): the embedded modes. */
  get ownsKernel(): boolean {
    return this.svc !== null;
  }

  /**
   * A kernel restart: the embedded service is stopped (every connection drops, every frame and
   * pfn is gone) and a new one, with a new boot id, listens on the same port; the suite's process
   * and window are created again (same names; a fresh kernel gives its first process the same pid
   * and its first mapping the same address, so a {pid}-configured client can follow). Returns
   * the old and new boot ids.
   */
  async restartKernel(): Promise<{ oldBoot: number; newBoot: number; oldPid: number }> {
    if (!this.svc || !this.app) throw new DevmirrorError('DM_ERR_CONFLICT', 'the suite does not own the kernel (url mode)');
    const port = Number(new URL(this.api.base).port);
    const oldBoot = (await this.api.get<{ bootId: number }>('/healthz')).bootId;
    const oldPid = this.pid;
    await this.svc.stop().catch(() => undefined);
    await this.app.close().catch(() => undefined);
    this.svc = null;
    this.app = null;
    await this.startService(port);
    await this.createProcess();
    const newBoot = (await this.api.get<{ bootId: number }>('/healthz')).bootId;
    return { oldBoot, newBoot, oldPid };
  }

  /** The suite's process and its window (again after an exit: same names, new pid). */
  async createProcess(): Promise<void> {
    const p = await this.api.post<{ pid: number }>('/v1/processes', { name: PROCESS_NAME });
    const length = WINDOW_PAGES * PAGE;
    const r = await this.api.post<{ addr: number }>(`/v1/processes/${p.pid}/mmap`, { length, prot: ['read', 'write'], populate: true, name: WINDOW_NAME });
    this.pid = p.pid;
    this.window = { start: r.addr, end: r.addr + length, name: WINDOW_NAME };
    this.ownsProcess = true;
  }

  private launch(command: string): void {
    const token = this.o.token ?? LOCAL_TOKEN;
    const subst = command
      .replaceAll('{url}', this.channelUrl)
      .replaceAll('{token}', token)
      .replaceAll('{process}', PROCESS_NAME)
      .replaceAll('{pid}', String(this.pid))
      .replaceAll('{window}', WINDOW_NAME)
      .replaceAll('{kind}', this.o.kind);
    const child = spawn(subst, {
      shell: true,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        DEVMIRROR_URL: this.channelUrl,
        DEVMIRROR_TOKEN: token,
        DEVMIRROR_PROCESS: PROCESS_NAME,
        DEVMIRROR_PID: String(this.pid),
        DEVMIRROR_WINDOW: WINDOW_NAME,
        DEVMIRROR_KIND: this.o.kind,
      },
    });
    const out = this.o.clientOutput ?? (() => undefined);
    child.stdout?.on('data', (b: Buffer) => out(b.toString()));
    child.stderr?.on('data', (b: Buffer) => out(b.toString()));
    this.child = child;
    this.childExit = new Promise<void>((r) => child.once('exit', () => r()));
  }

  /**
   * Waits for a live external device of the kind on the current pid, other than `old` (a
   * reattachment gets a new client id), by name when one is known.
   */
  async waitAttached(old: DeviceInfo | null, newKernel = false): Promise<DeviceInfo> {
    const deadline = Date.now() + (this.o.attachMs ?? 20_000);
    for (;;) {
      if (this.child && this.child.exitCode !== null) {
        throw new DevmirrorError('DM_ERR_ATTACH_TIMEOUT', `the client command exited with code ${this.child.exitCode} before its device attached`);
      }
      const list = await this.api.devices();
      const d = list.find(
        (x) =>
          x.transport === 'external' &&
          x.kind === this.o.kind &&
          alive(x.state) &&
          // A gpu subscribes only when it first faults: no pids yet is fine.
          ((x.pids ?? []).length === 0 || (x.pids ?? []).includes(this.pid)) &&
          // After a kernel restart ids start again: any live device of the name is the new session.
          (old === null || ((newKernel || x.id !== old.id) && (this.o.mode === 'url' || x.name === old.name))),
      );
      // Connected is not attached: the personality registers its commands once it is built, so
      // the device is ready when it answers one (the mirror map).
      if (d && (await this.api.mirror(d.id, this.window.start, 1).then(() => true, () => false))) return d;
      if (Date.now() > deadline) {
        throw new DevmirrorError('DM_ERR_ATTACH_TIMEOUT', `no ${this.o.kind} device attached to pid ${this.pid} within ${this.o.attachMs ?? 20_000} ms`);
      }
      await sleep(100);
    }
  }
}

export function alive(state: string): boolean {
  return state === 'running' || state === 'connected' || state === 'attached' || state === 'ready';
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `node <this build's cli.js> device ...` for the built-in personality as a client process. */
export function builtinCommand(kind: DeviceKind, policy = 'faithful'): string {
  const cli = cliPath();
  return `${JSON.stringify(process.execPath)} ${JSON.stringify(cli)} device --kind ${kind} --url {url} --token {token} --process {process} --window {window} --name conformance-${kind} --policy ${policy}`;
}

/** The compiled CLI: this file's sibling when running from dist, else the repository's dist build. */
export function cliPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const sibling = join(here, '..', 'cli.js');
  if (existsSync(sibling)) return sibling;
  const dist = join(here, '..', '..', 'dist', 'src', 'cli.js');
  if (existsSync(dist)) return dist;
  throw new DevmirrorError('DM_ERR_CONFIG', `no compiled devmirror CLI next to ${here} or in dist/ (run npm run build)`);
}
