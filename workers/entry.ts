/**
 * Entry point of a device worker thread: builds the host (the device side of the notifier channel)
 * and the personality named in workerData, then runs the mailbox loop.
 */
import { workerData } from 'node:worker_threads';
import type { DeviceInit } from '../src/devices/protocol.js';
import { WorkerHost } from './runtime/worker-host.js';
import type { Device } from './runtime/device.js';
import type { DeviceHost } from './runtime/host.js';
import { Dmirror } from './dmirror.js';
import { Gpu } from './gpu.js';
import { Kvm } from './kvm.js';
import { Rdma } from './rdma.js';

const PERSONALITIES: Record<string, (h: DeviceHost) => Device> = {
  dmirror: (h) => new Dmirror(h),
  gpu: (h) => new Gpu(h),
  rdma: (h) => new Rdma(h),
  kvm: (h) => new Kvm(h),
};

export function registerPersonality(kind: string, make: (h: DeviceHost) => Device): void {
  PERSONALITIES[kind] = make;
}

const init = workerData as DeviceInit;
const host = new WorkerHost(init);
const make = PERSONALITIES[init.kind];
if (!make) throw new Error(`no personality ${init.kind}`);
const device = make(host);
host.mirrorSummary = () => device.summary();
void host.run(() => device.attach());
