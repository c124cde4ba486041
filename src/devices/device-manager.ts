/**
 * Spawns, lists and stops device workers. One worker thread per device; each device is attached to
 * one process and owns a share of device memory (its frames carry its id as owner).
 */
import { Buffer } from 'node:buffer';
import os from 'node:os';
import type { Logger } from 'pino';
import { timingSafeEqual } from 'node:crypto';
import { DevmirrorError } from '../errors.js';
import type { Kernel } from '../kernel/kernel.js';
import { AdaptiveSpin, WorkerAckGroup } from './ack-group.js';
import { DEVICE_KINDS, EVENT_POLICIES, type DeviceKind, type EventPolicy } from './protocol.js';
import { WorkerDevice } from './worker-device.js';
import type { Finding } from '../sanitizer/sanitizer.js';

export interface CreateDevice {
  kind: DeviceKind;
  name?: string;
  pid?: number;
  process?: string;
  policy?: EventPolicy;
  options?: Record<string, unknown>;
  /** Acknowledgement deadline before eviction, ms (default: the manager's). */
  deadlineMs?: number;
}

export interface DeviceManagerOptions {
  deadlineMs?: number;
  /**
   * How long a device spins on its doorbell before parking when cores allow (default 200 us). With a
   * core to itself a spinning device costs nothing the kernel needs, and a parked one costs the next
   * round a futex wake (tens of us here). Measured with one dmirror worker, 20,000 back-to-back
   * rounds per setting, four settings interleaved, four runs (2 vCPUs, 2026-11-27): kernel 30 /
   * device 50 us: 30,762 to 79,403 rounds/s, p99 136 to 242 us; kernel 30 / device 200 us: 72,651
   * to 103,180 rounds/s, p99 77 to 119 us; a kernel spin of 100 us did no better with either.
   * Devices never spin when they and the kernel thread outnumber the cores.
   */
  workerSpinUs?: number;
  /**
   * Longest the kernel thread spins for answers before it parks (default 500 us; 0 never spins).
   * The budget of a wait is 100 us, more when the answers outnumber the spare cores: see AdaptiveSpin.
   */
  kernelSpinUs?: number;
  /** Cores to plan spinning for (default: os.cpus().length). */
  cores?: number;
  /**
   * First ring position of every device's calls and ends (default 0). Positions are int32 and
   * wrap; tests start near the wrap to cross it within a few rounds.
   */
  ringStart?: number;
  log?: (level: 'debug' | 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>) => void;
  /** The notifier channel's URL once the server listens (workers then subscribe through it). */
  channelUrl?: () => string | null;
  /** A pino logger: each device logs through a child of it (bindings: device, deviceId, kind). */
  logger?: Logger;
}

/** Where the worker entry is: the compiled .js next to us, or the .ts sources under vitest/tsx. */
function workerEntry(): { url: URL; tsBootstrap: boolean } {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return { url: new URL('../../workers/entry.ts', here), tsBootstrap: true };
  return { url: new URL('../../workers/entry.js', here), tsBootstrap: false };
}

export class DeviceManager {
  readonly devices = new Map<number, WorkerDevice>();
  readonly group: WorkerAckGroup;
  private nextId = 1;
  private readonly counts = new Map<string, number>();
  readonly deadlineMs: number;
  readonly workerSpinUs: number;
  readonly cores: number;
  private readonly ringStart: number;
  private readonly log: NonNullable<DeviceManagerOptions['log']>;
  channelUrl: DeviceManagerOptions['channelUrl'];
  private readonly logger: Logger | undefined;
  onFinding: ((d: WorkerDevice, f: Finding) => void) | null = null;
  onChange: ((d: WorkerDevice) => void) | null = null;

  constructor(
    private readonly k: Kernel,
    opts: DeviceManagerOptions = {},
  ) {
    this.deadlineMs = opts.deadlineMs ?? 1000;
    this.workerSpinUs = opts.workerSpinUs ?? 200;
    this.cores = opts.cores ?? os.cpus().length;
    this.ringStart = (opts.ringStart ?? 0) | 0;
    this.log = opts.log ?? (() => undefined);
    this.channelUrl = opts.channelUrl;
    this.logger = opts.logger;
    const spin = new AdaptiveSpin(this.cores, opts.kernelSpinUs);
    this.group = new WorkerAckGroup(undefined, spin);
    // A device belongs to its process as test_hmm's file belongs to the process that opened it:
    // the exit closes it (dmirror_fops_release), after exit_mmap released its mirror. Without
    // this, every device of an exited process would keep its worker thread forever.
    k.observe({
      onProcessExit: (p) => {
        for (const d of this.devices.values()) {
          if (d.alive && d.pid === p.pid) void d.stop().catch((e: Error) => this.log('warn', 'stopping the device of an exited process failed', { device: d.name, error: e.message }));
        }
      },
    });
  }

  /**
   * Devices spin on their doorbell before parking only while every device and the kernel thread
   * can each have a core: a spinner sharing a core with the thread it waits for only delays it
   * (machine-facts: 2 spinners on 2 cores are slower than none).
   */
  private rebalanceSpin(): void {
    const live = this.list().filter((d) => d.alive);
    const us = live.length + 1 <= this.cores ? this.workerSpinUs : 0;
    for (const d of live) d.setSpinUs(us);
  }

  /** Device ids are shared by worker and external devices: an id is the owner of migrations. */
  allocateId(): number {
    return this.nextId++;
  }

  /** Set at shutdown: no new device. */
  closed = false;

  async create(req: CreateDevice): Promise<WorkerDevice> {
    if (this.closed) throw new DevmirrorError('DM_ERR_CONFLICT', 'the service is shutting down');
    if (!DEVICE_KINDS.includes(req.kind)) throw new DevmirrorError('DM_ERR_VALIDATION', `unknown device kind ${String(req.kind)}`);
    const policy = req.policy ?? 'faithful';
    if (!EVENT_POLICIES.includes(policy)) throw new DevmirrorError('DM_ERR_VALIDATION', `unknown event policy ${String(policy)}`);
    const proc = req.pid !== undefined ? this.k.process(req.pid) : this.k.process(req.process ?? '');
    if (proc.mm.exiting) throw new DevmirrorError('DM_ERR_PROCESS_EXITING', `process ${proc.pid} is exiting`);
    const n = (this.counts.get(req.kind) ?? 0) + 1;
    this.counts.set(req.kind, n);
    const name = req.name ?? `${req.kind}${n - 1}`;
    for (const d of this.devices.values()) {
      if (d.name === name && d.alive) throw new DevmirrorError('DM_ERR_CONFLICT', `a device named ${name} exists`);
    }
    const id = this.allocateId();
    const dev = new WorkerDevice(this.k, this.group, id, {
      kind: req.kind,
      name,
      process: proc,
      policy,
      options: req.options ?? {},
      deadlineMs: req.deadlineMs ?? this.deadlineMs,
      channelUrl: this.channelUrl?.() ?? null,
      ringStart: this.ringStart,
    });
    const child = this.logger?.child({ device: name, deviceId: id, kind: req.kind, transport: 'worker' });
    dev.log = child ? (level, msg, data) => child[level](data ?? {}, msg) : (level, msg, data) => this.log(level, msg, { device: name, deviceId: id, ...data });
    dev.onFinding = (d, f) => this.onFinding?.(d, f);
    dev.onStateChange = (d) => {
      this.rebalanceSpin();
      if (!d.alive) this.pruneDead();
      this.onChange?.(d);
    };
    this.devices.set(id, dev);
    // dev_pagemap_ops: the kernel tells the device before it moves the device's pages back.
    this.k.pagemaps.set(id, {
      owner: id,
      migratingOut: async (mm, vas) => {
        // The device mirrors one process; pages of its memory mapped elsewhere (after fork) are
        // not in its mirror.
        if (dev.alive && mm.pid === dev.pid) await dev.command('migrating-out', { vas }, dev.deadlineMs * 2).catch(() => undefined);
      },
    });
    try {
      await dev.start(workerEntry());
    } catch (e) {
      this.devices.delete(id);
      this.k.pagemaps.delete(id);
      await dev.evict('failed to start').catch(() => undefined);
      throw e;
    }
    this.rebalanceSpin();
    this.log('info', 'device attached', { device: name, deviceId: id, kind: req.kind, pid: proc.pid, policy });
    return dev;
  }

  /** Dead devices kept for the API and dashboard (what happened to them), newest; older ones are forgotten. */
  keepDeadDevices = 64;

  /**
   * Forgets the oldest dead devices beyond keepDeadDevices (a service that runs for days with
   * devices crashing and restarting must not keep every one: the soak's memory check).
   */
  private pruneDead(): void {
    let dead = 0;
    for (const d of this.devices.values()) if (!d.alive) dead++;
    for (const [id, d] of this.devices) {
      if (dead <= this.keepDeadDevices) break;
      if (d.alive) continue;
      this.devices.delete(id);
      this.k.pagemaps.delete(id);
      dead--;
    }
  }

  /** The live worker a channel token (`worker:<id>:<secret>`) belongs to, or null. */
  workerByToken(token: string): WorkerDevice | null {
    const m = /^worker:(\d+):[0-9a-f]{32}$/.exec(token);
    if (!m) return null;
    const d = this.devices.get(Number(m[1]));
    if (!d || !d.alive) return null;
    const a = Buffer.from(d.channelToken);
    const b = Buffer.from(token);
    return a.length === b.length && timingSafeEqual(a, b) ? d : null;
  }

  get(id: number): WorkerDevice {
    const d = this.devices.get(id);
    if (!d) throw new DevmirrorError('DM_ERR_NO_SUCH_DEVICE', `no device ${id}`);
    return d;
  }

  list(): WorkerDevice[] {
    return [...this.devices.values()];
  }

  async remove(id: number): Promise<void> {
    const d = this.get(id);
    await d.stop();
    this.devices.delete(id);
  }

  async stopAll(): Promise<void> {
    this.closed = true;
    await Promise.all(this.list().map((d) => d.stop().catch(() => undefined)));
  }
}
