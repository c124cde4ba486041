/** Public API of the devmirror package. */
export { Kernel, DEFAULT_KERNEL_CONFIG, type KernelConfig, type Process } from './kernel/kernel.js';
export { PROT } from './kernel/vma.js';
export { MmuNotifier, MmuIntervalNotifier, MmuNotifierSubscriptions } from './notifier/subscriptions.js';
export { MmuNotifierEvent, EVENT_NAMES, RANGE_BLOCKABLE, type NotifierRange } from './notifier/range.js';
export { HMM_PFN, type HmmRange } from './kernel/hmm.js';
export { DevmirrorError, ERRORS, type ErrorCode } from './errors.js';
export { Service } from './service.js';
export { buildServer } from './http/server.js';
export { DeviceClient, type DeviceClientOptions, type InvalidateStartEvent, type InvalidateEndEvent, type YoungQueryEvent } from './client/device-client.js';
export { runExternalDevice, type ExternalDeviceOptions, type RunningDevice } from './client/run-device.js';
export { CLOSE } from './channel/close-codes.js';
export { CHANNEL_PATH } from './channel/channel-server.js';
