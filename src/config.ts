/**
 * Configuration from the environment, validated once at start. Every variable is documented in
 * docs/configuration.md (the table there is checked against ENV_VARS by a test).
 */
import { DEFAULT_WATCHDOG_MS } from './progress/monitor.js';
import { DevmirrorError } from './errors.js';
import { TokenTable } from './channel/tokens.js';

export interface EnvVar {
  name: string;
  description: string;
  default: string;
}

export const ENV_VARS: readonly EnvVar[] = [
  { name: 'HOST', description: 'Address the HTTP/WebSocket server binds to', default: '127.0.0.1' },
  { name: 'PORT', description: 'Port of the HTTP/WebSocket server (0 = any free port)', default: '8080' },
  { name: 'LOG_LEVEL', description: 'pino log level: fatal, error, warn, info, debug, trace, silent', default: 'info' },
  { name: 'DEVMIRROR_MEMORY_MB', description: 'Emulated RAM in MiB (a multiple of 2)', default: '64' },
  { name: 'DEVMIRROR_DEVICE_MEMORY_MB', description: 'Device memory (VRAM) pool in MiB', default: '16' },
  { name: 'DEVMIRROR_SWAP_MB', description: 'Swap area in MiB', default: 'twice the memory' },
  { name: 'DEVMIRROR_NUMA_NODES', description: 'NUMA nodes the RAM is split between', default: '2' },
  { name: 'DEVMIRROR_MAX_PROCESSES', description: 'Size of the process table', default: '1024' },
  { name: 'DEVMIRROR_THP', description: 'Transparent huge pages: always, madvise or never', default: 'madvise' },
  {
    name: 'DEVMIRROR_TOKENS',
    description: 'Notifier-channel tokens and the processes each may use: `token=grant;...`, a grant is `*` or pids and process names separated by commas (tokens of 8+ characters); required when HOST is not a loopback address',
    default: 'the local token devmirror-local, all processes (with a warning; loopback HOST only)',
  },
  {
    name: 'DEVMIRROR_API_AUTH',
    description: 'Whether the HTTP API requires `Authorization: Bearer <token>` (a token of DEVMIRROR_TOKENS, acting with its grant): auto (exactly when DEVMIRROR_TOKENS is set), on or off (off is refused with a non-loopback HOST)',
    default: 'auto',
  },
  {
    name: 'DEVMIRROR_TOKEN',
    description: 'The token the command-line clients present: `devmirror device` to the notifier channel and to the HTTP API (--process lookups), `devmirror bench --target` to the HTTP API (their --token overrides it); the service itself ignores it',
    default: 'devmirror-local',
  },
  { name: 'DEVMIRROR_ACK_DEADLINE_MS', description: 'How long a device (worker or external) may take to acknowledge an invalidation before it is evicted', default: '1000' },
  { name: 'DEVMIRROR_PROGRESS_WATCHDOG_MS', description: 'The progress oracle (GET /v1/progress, docs/explore.md): an acknowledgement or readBegin waiting this long is reported, with the wait-for graph; below the ack deadline so it is seen before the eviction', default: '500' },
  { name: 'DEVMIRROR_PROGRESS_RETRY_BUDGET', description: 'The progress oracle: range faults of one subscription answered EBUSY in a row before it reports a livelock', default: '16' },
  { name: 'DEVMIRROR_DEMO', description: 'Start the demo process `demo`, one device of each kind and a light workload (scenarios/demo.json): 1 or 0', default: '1' },
  { name: 'DEVMIRROR_CHANNEL_MAX_FRAME_KB', description: 'Largest notifier-channel frame a client may send, KiB', default: '1024' },
  { name: 'DEVMIRROR_TRACE_EVENTS', description: 'Size of the trace ring (GET /v1/trace, docs/trace.md), entries (at most 1000000, about 170 bytes each, allocated at start); 0 (the default) leaves tracing off, 50000 is a good size', default: '0' },
];

export interface Config {
  host: string;
  port: number;
  logLevel: string;
  memoryBytes: number;
  deviceMemoryBytes: number;
  swapBytes: number;
  numaNodes: number;
  maxProcesses: number;
  thp: 'always' | 'madvise' | 'never';
  tokens: string | undefined;
  /** The HTTP API requires a token (DEVMIRROR_API_AUTH resolved). */
  apiAuth: boolean;
  ackDeadlineMs: number;
  progressWatchdogMs: number;
  progressRetryBudget: number;
  channelMaxFrameBytes: number;
  demo: boolean;
  /** Trace ring size, entries (0: tracing off). */
  traceEvents: number;
}

const MiB = 1024 * 1024;
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function int(env: NodeJS.ProcessEnv, name: string, def: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return def;
  if (!/^\d+$/.test(raw.trim())) throw new DevmirrorError('DM_ERR_CONFIG', `${name} must be an integer, got "${raw}"`);
  const v = Number(raw);
  if (v < min || v > max) throw new DevmirrorError('DM_ERR_CONFIG', `${name} must be between ${min} and ${max}, got ${v}`);
  return v;
}

/** Reads and validates the configuration; throws DM_ERR_CONFIG with a clear message. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const known = new Set(ENV_VARS.map((v) => v.name));
  for (const name of Object.keys(env)) {
    if (name.startsWith('DEVMIRROR_') && !known.has(name)) {
      throw new DevmirrorError('DM_ERR_CONFIG', `unknown variable ${name} (see docs/configuration.md)`);
    }
  }
  const memoryMb = int(env, 'DEVMIRROR_MEMORY_MB', 64, 4, 4096);
  if (memoryMb % 2 !== 0) throw new DevmirrorError('DM_ERR_CONFIG', 'DEVMIRROR_MEMORY_MB must be a multiple of 2');
  const thp = env.DEVMIRROR_THP ?? 'madvise';
  if (!['always', 'madvise', 'never'].includes(thp)) {
    throw new DevmirrorError('DM_ERR_CONFIG', `DEVMIRROR_THP must be always, madvise or never, got "${thp}"`);
  }
  const logLevel = env.LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(logLevel)) throw new DevmirrorError('DM_ERR_CONFIG', `LOG_LEVEL must be one of ${LEVELS.join(', ')}`);
  const host = env.HOST ?? '127.0.0.1';
  if (host.trim() === '') throw new DevmirrorError('DM_ERR_CONFIG', 'HOST must not be empty');
  // Fail fast on a bad token list, with the table's own message.
  TokenTable.parse(env.DEVMIRROR_TOKENS);
  // The embedded local token grants every process: fine on loopback, not on an interface others
  // can reach (a container's 0.0.0.0, a LAN address).
  const loopback = host === 'localhost' || host === '::1' || /^127\./.test(host);
  if (!loopback && !env.DEVMIRROR_TOKENS?.trim()) {
    throw new DevmirrorError('DM_ERR_CONFIG', `HOST=${host} exposes the notifier channel beyond this machine: set DEVMIRROR_TOKENS (docs/configuration.md)`);
  }
  // The API drives every process's memory: with tokens it asks for them too, unless told otherwise,
  // and it is never left open on an interface others can reach.
  const apiAuthMode = (env.DEVMIRROR_API_AUTH ?? 'auto').trim() || 'auto';
  if (!['auto', 'on', 'off'].includes(apiAuthMode)) throw new DevmirrorError('DM_ERR_CONFIG', `DEVMIRROR_API_AUTH must be auto, on or off, got "${apiAuthMode}"`);
  if (apiAuthMode === 'off' && !loopback) {
    throw new DevmirrorError('DM_ERR_CONFIG', `DEVMIRROR_API_AUTH=off with HOST=${host} would let anyone who reaches it drive every process: use it on a loopback HOST only`);
  }
  const apiAuth = apiAuthMode === 'on' || (apiAuthMode === 'auto' && !!env.DEVMIRROR_TOKENS?.trim());
  return {
    host,
    port: int(env, 'PORT', 8080, 0, 65535),
    logLevel,
    memoryBytes: memoryMb * MiB,
    deviceMemoryBytes: int(env, 'DEVMIRROR_DEVICE_MEMORY_MB', 16, 0, 4096) * MiB,
    swapBytes: int(env, 'DEVMIRROR_SWAP_MB', memoryMb * 2, 0, 16384) * MiB,
    numaNodes: int(env, 'DEVMIRROR_NUMA_NODES', 2, 1, 64),
    maxProcesses: int(env, 'DEVMIRROR_MAX_PROCESSES', 1024, 1, 65536),
    thp: thp as Config['thp'],
    tokens: env.DEVMIRROR_TOKENS,
    apiAuth,
    ackDeadlineMs: int(env, 'DEVMIRROR_ACK_DEADLINE_MS', 1000, 10, 600_000),
    progressWatchdogMs: int(env, 'DEVMIRROR_PROGRESS_WATCHDOG_MS', DEFAULT_WATCHDOG_MS, 10, 600_000),
    progressRetryBudget: int(env, 'DEVMIRROR_PROGRESS_RETRY_BUDGET', 16, 2, 1_000_000),
    channelMaxFrameBytes: int(env, 'DEVMIRROR_CHANNEL_MAX_FRAME_KB', 1024, 16, 65536) * 1024,
    demo: int(env, 'DEVMIRROR_DEMO', 1, 0, 1) === 1,
    // At most a million entries: the ring is allocated up front (about 170 bytes an entry).
    traceEvents: int(env, 'DEVMIRROR_TRACE_EVENTS', 0, 0, 1_000_000),
  };
}
