/**
 * Entry point of a device worker thread: builds the host (the device side of the notifier channel)
 * and the personality named in workerData, then runs the mailbox loop.
 */
import { workerData } from 'node:worker_threads';
import type { DeviceInit } from '../src/devices/protocol.js';
import { WorkerHost } from './runtime/worker-host.js';
import { PERSONALITIES, registerPersonality } from './personalities.js';

export { registerPersonality };

const init = workerData as DeviceInit;
const host = new WorkerHost(init);
const make = PERSONALITIES[init.kind];
if (!make) throw new Error(`no personality ${init.kind}`);
const device = make(host);
host.mirrorSummary = () => device.summary();
void host.run(() => device.attach());
