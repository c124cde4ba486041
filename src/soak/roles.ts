/**
 * The soak's device population: one *role* per (kind, transport), each mirroring its own named
 * mapping of the soak process (its DMA window, rdma MR, kvm memslot) so that the pages a device
 * writes are written by it alone. A role outlives its devices: when a fault kills the current
 * incarnation the role creates the next one (a worker), or waits for the client process to
 * re-attach (an external client reconnects by itself; a killed process is started again).
 *
 * Lost-write bookkeeping: each incarnation's DMA engine journals its writes (stamp `[tag, seq]`,
 * tag = the device id). The role keeps what memory must hold, page by page; an incarnation that
 * died while writing leaves its window unknown (its last writes were never reported), so the role
 * forgets its expectations then, and the next incarnation's writes rebuild them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Service } from '../service.js';
import type { WorkerDevice } from '../devices/worker-device.js';
import type { ExternalDevice } from '../channel/external-device.js';
import type { BugMode, DeviceKind, DmaQuiesced } from '../devices/protocol.js';
import { windowOptions } from '../client/resolve.js';

export type Transport = 'worker' | 'external';
export type AnyDevice = WorkerDevice | ExternalDevice;

/** What the soak expects at one page: the stamp of the last journalled device write. */
interface Expectation {
  tag: number;
  seq: number;
}

export interface RoleStats {
  incarnations: number;
  journalled: number;
  verified: number;
}

function cliArgs(): string[] {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return ['--import', 'tsx', fileURLToPath(new URL('../cli.ts', here))];
  return [fileURLToPath(new URL('../cli.js', here))];
}

export class Role {
  readonly name: string;
  device: AnyDevice | null = null;
  /** The client process of an external role. */
  child: ChildProcess | null = null;
  readonly expected = new Map<number, Expectation>();
  readonly stats: RoleStats = { incarnations: 0, journalled: 0, verified: 0 };
  bug: BugMode | null = null;

  constructor(
    readonly kind: DeviceKind,
    readonly transport: Transport,
    /** Name of the mapping the role mirrors, and its bounds in the soak process. */
    readonly window: { name: string; start: number; end: number },
  ) {
    this.name = `${kind}-${transport === 'worker' ? 'w' : 'x'}`;
  }

  get alive(): boolean {
    return this.device !== null && this.device.alive;
  }

  /** The incarnation ended: what it wrote since the last quiesce is unknown. */
  forget(): void {
    this.expected.clear();
  }

  /** Takes in a quiesced journal: these stamps are now what memory must hold. */
  absorb(q: DmaQuiesced): void {
    for (const [va, tag, seq] of q.journal) this.expected.set(va, { tag, seq });
    this.stats.journalled += q.journal.length;
  }
}

export interface RoleEnv {
  svc: Service;
  pid: number;
  processName: string;
  /** ws URL of the notifier channel (external roles). */
  url: string;
  dma: { rate: number; writeMix: number; transferUs: number };
  log: (msg: string) => void;
}

/** Starts or adopts the role's next incarnation; resolves true if a device is live afterwards. */
export async function ensureIncarnation(role: Role, env: RoleEnv): Promise<boolean> {
  if (role.alive) return true;
  if (role.device) {
    // It died since we last looked (a fault, an eviction, a lost connection).
    role.device = null;
    role.forget();
  }
  let dev: AnyDevice | null = null;
  if (role.transport === 'worker') {
    try {
      dev = await env.svc.devices.create({
        kind: role.kind,
        name: `${role.name}.${role.stats.incarnations}`,
        pid: env.pid,
        options: windowOptions(role.kind, role.window),
      });
    } catch (e) {
      env.log(`role ${role.name}: start failed: ${(e as Error).message}`);
      return false;
    }
  } else {
    dev = env.svc.channel.list().find((d) => d.name === role.name && d.alive) ?? null;
    if (!dev) {
      if (!role.child || role.child.exitCode !== null || role.child.signalCode !== null) startClient(role, env);
      return false;
    }
  }
  role.device = dev;
  role.stats.incarnations++;
  if (role.bug) await dev.command('bug', { bug: role.bug }, 10_000).catch(() => undefined);
  await startDma(role, env);
  return role.alive;
}

export async function startDma(role: Role, env: RoleEnv): Promise<void> {
  const d = role.device;
  if (!d || !d.alive || env.dma.rate <= 0) return;
  await d
    .command(
      'dma',
      {
        rate: env.dma.rate,
        pattern: 'random',
        writeMix: env.dma.writeMix,
        transferUs: env.dma.transferUs,
        bytes: 64,
        start: role.window.start,
        end: role.window.end,
        journalTag: d.id,
      },
      10_000,
    )
    .catch(() => undefined);
}

/**
 * Stops the role's DMA and takes in its journal. Returns null when done, else why not: then the
 * role forgets its expectations (its engine may still be writing), and the caller reports it.
 */
export async function quiesceDma(role: Role, timeoutMs = 30_000): Promise<string | null> {
  const d = role.device;
  if (!d || !d.alive) return null;
  try {
    role.absorb(await d.command<DmaQuiesced>('dma-quiesce', {}, timeoutMs));
    return null;
  } catch (e) {
    role.forget();
    return d.alive ? `${role.name}: its DMA did not quiesce within ${timeoutMs} ms (${(e as Error).message})` : null;
  }
}

function startClient(role: Role, env: RoleEnv): void {
  const args = [...cliArgs(), 'device', '--kind', role.kind, '--url', env.url, '--process', env.processName, '--window', role.window.name, '--name', role.name];
  const c = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LOG_LEVEL: 'error' } });
  c.stderr!.on('data', (d: Buffer) => env.log(`${role.name}: ${d.toString().trim().slice(0, 300)}`));
  role.child = c;
}

/** Kills the role's client process (an external device crash). */
export function killClient(role: Role): void {
  role.child?.kill('SIGKILL');
}

export async function stopRoles(roles: Role[]): Promise<void> {
  await Promise.all(
    roles.map(async (r) => {
      if (r.child && r.child.exitCode === null && r.child.signalCode === null) {
        const exited = new Promise<void>((res) => r.child!.once('exit', () => res()));
        r.child.kill('SIGTERM');
        await Promise.race([exited, new Promise((res) => setTimeout(res, 3000))]);
        if (r.child.exitCode === null) r.child.kill('SIGKILL');
      }
    }),
  );
}

/** Client process ids (their memory is reported beside the service's). */
export function clientPids(roles: Role[]): number[] {
  return roles.map((r) => r.child?.pid).filter((p): p is number => typeof p === 'number');
}
