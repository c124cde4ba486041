/**
 * Finds, through the kernel's HTTP API, what an external device attaches to when it is given names
 * rather than numbers: the process by name (a pid changes when the kernel restarts; compose
 * restarts it), and a mapping of that process by name (the DMA window, an rdma MR, a kvm memslot).
 * The API is served on the same host and port as the notifier channel.
 */
import { DevmirrorError } from '../errors.js';
import { apiRequest, type ApiEndpoint } from './api.js';

export interface Resolved {
  pid: number;
  /** The named mapping, if one was asked for. */
  window?: { start: number; end: number };
}

/** http(s)://host:port of the service behind a ws(s):// channel URL. */
export function apiBase(channelUrl: string): string {
  const u = new URL(channelUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = '';
  u.search = '';
  return u.origin;
}

/** The process (and mapping) of a notifier-channel URL's service, by name (the token, if the API requires one). */
export function resolveTarget(channelUrl: string, processName: string, windowName?: string, token?: string): Promise<Resolved> {
  return resolveByName({ base: apiBase(channelUrl), token }, processName, windowName);
}

/** The process (and mapping) by name, through the API at `api` (http://host:port, and a token). */
export async function resolveByName(api: ApiEndpoint, processName: string, windowName?: string): Promise<Resolved> {
  const base = typeof api === 'string' ? api : api.base;
  const list = await apiRequest<{ items: Array<{ pid: number; name: string; state?: string }> }>(api, 'GET', '/v1/processes', undefined, 10_000);
  const p = list.items.find((x) => x.name === processName);
  if (!p) throw new DevmirrorError('DM_ERR_NO_SUCH_PROCESS', `no process named ${processName} at ${base} (processes: ${list.items.map((x) => x.name).join(', ') || 'none'})`);
  if (!windowName) return { pid: p.pid };
  const maps = await apiRequest<{ items: Array<{ start: number; end: number; name: string | null }> }>(api, 'GET', `/v1/processes/${p.pid}/maps`, undefined, 10_000);
  const m = maps.items.find((v) => v.name === windowName);
  if (!m) throw new DevmirrorError('DM_ERR_NO_SUCH_PROCESS', `process ${processName} (pid ${p.pid}) has no mapping named ${windowName}`);
  return { pid: p.pid, window: { start: m.start, end: m.end } };
}

/**
 * The personality options and DMA window for a device mirroring `window`: rdma registers it as its
 * MR, kvm as memslot 0; gpu and dmirror fault ranges in on demand.
 */
export function windowOptions(kind: string, w: { start: number; end: number }): Record<string, unknown> {
  if (kind === 'rdma') return { mrs: [{ addr: w.start, length: w.end - w.start }] };
  if (kind === 'kvm') return { memslots: [{ id: 0, baseGfn: 0x100000, npages: (w.end - w.start) / 4096, hva: w.start }] };
  return {};
}
