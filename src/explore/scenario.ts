/**
 * Explorer scenarios: a small program of named mappings, devices, and threads of operations
 * (syscalls, CPU accesses, kernel activity, device faults and DMA, dmirror commands). Threads run
 * their operations in order; the scheduler interleaves the threads with each other and with every
 * frame and device step they cause.
 *
 *   name: fault-races-munmap
 *   mappings:
 *     - { name: buf, pages: 2, prot: [read, write], populate: true }
 *   devices:
 *     - { name: gpu0, kind: gpu, bug: skip-seq-retry }
 *   threads:
 *     gpu: [ { op: fault, device: gpu0, map: buf, page: 0, write: true },
 *            { op: dma, device: gpu0, map: buf, page: 0, write: true } ]
 *     cpu: [ { op: munmap, map: buf, page: 0 } ]
 *
 * Pages are counted from a mapping's start; `pages` defaults to 1 for page-sized operations and to
 * the rest of the mapping for syscalls.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { DevmirrorError } from '../errors.js';
import { ADVICES, type Advice } from '../kernel/syscalls.js';
import { DEVICE_KINDS, EVENT_POLICIES, type BugMode, type DeviceKind, type EventPolicy } from '../devices/protocol.js';
import { EVENT_NAMES } from '../notifier/range.js';

export interface MappingSpec {
  name: string;
  process: string;
  pages: number;
  prot: Array<'read' | 'write' | 'exec'>;
  populate: boolean;
  shared: boolean;
  /** Backed by an in-memory file (writeback, msync). */
  file: boolean;
}

export interface DeviceSpec {
  name: string;
  kind: DeviceKind;
  process: string;
  /** The mapping the device mirrors (rdma MR, kvm memslot, DMA window). */
  window: string;
  policy: EventPolicy;
  bug: BugMode | null;
  options: Record<string, unknown>;
  /** DMA transfer time: > 0 makes every access wait for a scheduler step between lookup and data. */
  transferUs: number;
}

export const OPS = [
  'store',
  'load',
  'munmap',
  'mprotect',
  'madvise',
  'mmap',
  'fork',
  'exit',
  'clear_refs',
  'msync',
  'reclaim',
  'migrate',
  'compact',
  'ksm',
  'collapse',
  'thp_split',
  'writeback',
  'numa_balance',
  'oom_reap',
  'fault',
  'dma',
  'dmirror',
] as const;
export type OpName = (typeof OPS)[number];

export interface OpSpec {
  op: OpName;
  process?: string;
  map?: string;
  page?: number;
  pages?: number;
  device?: string;
  write?: boolean;
  prot?: Array<'read' | 'write' | 'exec'>;
  advice?: Advice;
  /** store: the byte written; load: the byte expected (optional). */
  value?: number;
  expect?: number;
  node?: number;
  /** dmirror: the test_hmm command (read, write, migrate-to-device, migrate-to-system, exclusive, snapshot, ...). */
  cmd?: string;
  /** fork: the child's process name. */
  child?: string;
}

export interface Scenario {
  name: string;
  description: string;
  processes: string[];
  mappings: MappingSpec[];
  devices: DeviceSpec[];
  threads: Array<{ name: string; ops: OpSpec[] }>;
}

const bad = (msg: string): never => {
  throw new DevmirrorError('DM_ERR_VALIDATION', `scenario: ${msg}`);
};
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown, what: string): string => (typeof v === 'string' && v.length > 0 && v.length <= 64 ? v : bad(`${what} must be a non-empty string`));
const int = (v: unknown, what: string, min: number, max: number): number =>
  Number.isInteger(v) && (v as number) >= min && (v as number) <= max ? (v as number) : bad(`${what} must be an integer in [${min}, ${max}]`);
const prot = (v: unknown, what: string): Array<'read' | 'write' | 'exec'> => {
  if (!Array.isArray(v) || !v.every((p) => p === 'read' || p === 'write' || p === 'exec')) bad(`${what} must be a list of read, write, exec`);
  return v as Array<'read' | 'write' | 'exec'>;
};

const OP_KEYS = new Set(['op', 'process', 'map', 'page', 'pages', 'device', 'write', 'prot', 'advice', 'value', 'expect', 'node', 'cmd', 'child']);
const BUG_RE = new RegExp(`^(ack-before-quiesce|skip-seq-retry|lock-across-fault|ignore-event:(${EVENT_NAMES.join('|')}))$`);

/** Checks a parsed scenario and fills in defaults; every problem is a DM_ERR_VALIDATION. */
export function checkScenario(raw: unknown): Scenario {
  if (!isObj(raw)) bad('must be an object');
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) if (!['name', 'description', 'processes', 'mappings', 'devices', 'threads'].includes(k)) bad(`unknown key "${k}"`);
  const name = r.name === undefined ? 'scenario' : str(r.name, 'name');
  const processes = r.processes === undefined ? ['app'] : (Array.isArray(r.processes) ? r.processes : bad('processes must be a list')).map((p, i) => str(p, `processes[${i}]`));
  if (new Set(processes).size !== processes.length) bad('process names must be unique');
  const procOf = (v: unknown, what: string): string => {
    const p = v === undefined ? processes[0] : str(v, what);
    return processes.includes(p) ? p : bad(`${what}: no process "${p}"`);
  };
  const mappings = (Array.isArray(r.mappings) ? r.mappings : bad('mappings must be a non-empty list')).map((m, i): MappingSpec => {
    if (!isObj(m)) bad(`mappings[${i}] must be an object`);
    const o = m as Record<string, unknown>;
    return {
      name: str(o.name, `mappings[${i}].name`),
      process: procOf(o.process, `mappings[${i}].process`),
      pages: int(o.pages ?? 1, `mappings[${i}].pages`, 1, 1024),
      prot: o.prot === undefined ? ['read', 'write'] : prot(o.prot, `mappings[${i}].prot`),
      populate: o.populate !== false,
      shared: o.shared === true,
      file: o.file === true,
    };
  });
  if (mappings.length === 0) bad('mappings must be a non-empty list');
  const mapNames = new Set(mappings.map((m) => m.name));
  if (mapNames.size !== mappings.length) bad('mapping names must be unique');
  const devices = (r.devices === undefined ? [] : Array.isArray(r.devices) ? r.devices : bad('devices must be a list')).map((d, i): DeviceSpec => {
    if (!isObj(d)) bad(`devices[${i}] must be an object`);
    const o = d as Record<string, unknown>;
    const kind = str(o.kind, `devices[${i}].kind`);
    if (!(DEVICE_KINDS as readonly string[]).includes(kind)) bad(`devices[${i}].kind must be one of ${DEVICE_KINDS.join(', ')}`);
    const policy = o.policy === undefined ? 'faithful' : str(o.policy, `devices[${i}].policy`);
    if (!(EVENT_POLICIES as readonly string[]).includes(policy)) bad(`devices[${i}].policy must be one of ${EVENT_POLICIES.join(', ')}`);
    const bug = o.bug === undefined || o.bug === null ? null : str(o.bug, `devices[${i}].bug`);
    if (bug !== null && !BUG_RE.test(bug)) bad(`devices[${i}].bug "${bug}" is not a bug mode`);
    const window = o.window === undefined ? mappings[0].name : str(o.window, `devices[${i}].window`);
    if (!mapNames.has(window)) bad(`devices[${i}].window: no mapping "${window}"`);
    if (o.options !== undefined && !isObj(o.options)) bad(`devices[${i}].options must be an object`);
    return {
      name: str(o.name ?? `${kind}${i}`, `devices[${i}].name`),
      kind: kind as DeviceKind,
      process: procOf(o.process, `devices[${i}].process`),
      window,
      policy: policy as EventPolicy,
      bug: bug as BugMode | null,
      options: (o.options as Record<string, unknown>) ?? {},
      transferUs: int(o.transferUs ?? 1, `devices[${i}].transferUs`, 0, 1_000_000),
    };
  });
  const devNames = new Set(devices.map((d) => d.name));
  if (devNames.size !== devices.length) bad('device names must be unique');
  const tr = r.threads;
  if (!isObj(tr) || Object.keys(tr).length === 0) bad('threads must map thread names to lists of operations');
  const threads = Object.entries(tr as Record<string, unknown>).map(([tname, list]) => {
    str(tname, 'thread name');
    if (!Array.isArray(list)) bad(`threads.${tname} must be a list`);
    const ops = (list as unknown[]).map((x, j): OpSpec => {
      const where = `threads.${tname}[${j}]`;
      if (!isObj(x)) bad(`${where} must be an object`);
      const o = x as Record<string, unknown>;
      for (const k of Object.keys(o)) if (!OP_KEYS.has(k)) bad(`${where}: unknown key "${k}"`);
      const op = str(o.op, `${where}.op`) as OpName;
      if (!(OPS as readonly string[]).includes(op)) bad(`${where}.op must be one of ${OPS.join(', ')}`);
      const out: OpSpec = { op };
      if (o.process !== undefined) out.process = procOf(o.process, `${where}.process`);
      if (o.map !== undefined) {
        out.map = str(o.map, `${where}.map`);
        if (!mapNames.has(out.map)) bad(`${where}.map: no mapping "${out.map}"`);
      }
      if (o.page !== undefined) out.page = int(o.page, `${where}.page`, 0, 1023);
      if (o.pages !== undefined) out.pages = int(o.pages, `${where}.pages`, 1, 1024);
      if (o.device !== undefined) {
        out.device = str(o.device, `${where}.device`);
        if (!devNames.has(out.device)) bad(`${where}.device: no device "${out.device}"`);
      }
      if (o.write !== undefined) out.write = o.write === true;
      if (o.prot !== undefined) out.prot = prot(o.prot, `${where}.prot`);
      if (o.advice !== undefined) {
        const a = str(o.advice, `${where}.advice`);
        if (!(ADVICES as readonly string[]).includes(a)) bad(`${where}.advice must be one of ${ADVICES.join(', ')}`);
        out.advice = a as Advice;
      }
      if (o.value !== undefined) out.value = int(o.value, `${where}.value`, 0, 255);
      if (o.expect !== undefined) out.expect = int(o.expect, `${where}.expect`, 0, 255);
      if (o.node !== undefined) out.node = int(o.node, `${where}.node`, 0, 1);
      if (o.cmd !== undefined) out.cmd = str(o.cmd, `${where}.cmd`);
      if (o.child !== undefined) out.child = str(o.child, `${where}.child`);
      const needs = (k: keyof OpSpec, why: string): void => void (out[k] === undefined && bad(`${where}: ${op} needs ${why}`));
      if (['store', 'load', 'munmap', 'mprotect', 'madvise', 'msync', 'reclaim', 'migrate', 'collapse', 'thp_split', 'fault', 'dma', 'dmirror'].includes(op)) needs('map', 'map');
      if (['fault', 'dma', 'dmirror'].includes(op)) needs('device', 'device');
      if (op === 'mprotect') needs('prot', 'prot');
      if (op === 'madvise') needs('advice', 'advice');
      if (op === 'dmirror') needs('cmd', 'cmd');
      if (op === 'mmap') needs('map', 'map (the mapping to map again)');
      return out;
    });
    return { name: tname, ops };
  });
  return { name, description: typeof r.description === 'string' ? r.description : '', processes, mappings, devices, threads };
}

export function loadScenario(file: string): Scenario {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new DevmirrorError('DM_ERR_NOT_FOUND', `cannot read scenario ${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new DevmirrorError('DM_ERR_VALIDATION', `scenario ${file} does not parse: ${(e as Error).message}`);
  }
  return checkScenario(raw);
}

/** The scenario in its file form (threads as a map), which checkScenario reads back unchanged. */
export function scenarioToRaw(sc: Scenario): Record<string, unknown> {
  return { ...sc, threads: Object.fromEntries(sc.threads.map((t) => [t.name, t.ops])) };
}

/** A one-line description of an operation, for step lists. */
export function describeOp(o: OpSpec): string {
  const parts: string[] = [o.op];
  if (o.cmd) parts.push(o.cmd);
  if (o.device) parts.push(`by ${o.device}`);
  if (o.map) parts.push(`${o.map}[${o.page ?? 0}${o.pages ? `+${o.pages}` : ''}]`);
  if (o.process) parts.push(`in ${o.process}`);
  if (o.write !== undefined) parts.push(o.write ? 'write' : 'read');
  if (o.prot) parts.push(`prot=${o.prot.join('|') || 'none'}`);
  if (o.advice) parts.push(o.advice);
  if (o.value !== undefined) parts.push(`value=${o.value}`);
  if (o.expect !== undefined) parts.push(`expect=${o.expect}`);
  if (o.node !== undefined) parts.push(`node=${o.node}`);
  if (o.child) parts.push(`child=${o.child}`);
  return parts.join(' ');
}
