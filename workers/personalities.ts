/** The device personalities by kind, for both transports (worker threads and external processes). */
import type { Device } from './runtime/device.js';
import type { DeviceHost } from './runtime/host.js';
import { Dmirror } from './dmirror.js';
import { Gpu } from './gpu.js';
import { Kvm } from './kvm.js';
import { Rdma } from './rdma.js';

export const PERSONALITIES: Record<string, (h: DeviceHost) => Device> = {
  dmirror: (h) => new Dmirror(h),
  gpu: (h) => new Gpu(h),
  rdma: (h) => new Rdma(h),
  kvm: (h) => new Kvm(h),
};

export function registerPersonality(kind: string, make: (h: DeviceHost) => Device): void {
  PERSONALITIES[kind] = make;
}
