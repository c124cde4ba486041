/**
 * The conformance suite talks to the kernel service only through its HTTP API, in every mode (an
 * embedded service included): what it can do to a device is then exactly what an operator can do
 * to a device attached to a remote service.
 */
import { apiRequest } from '../client/api.js';
import type { EventEntry } from '../notifier/event-log.js';

export interface DeviceInfo {
  id: number;
  name: string;
  kind: string;
  transport: 'worker' | 'external';
  pid?: number;
  pids?: number[];
  state: string;
  stateReason?: string;
  mirror?: { pages?: number };
  sanitizer: { checked: number; findings: number | FindingInfo[] };
}

export interface FindingInfo {
  kind: string;
  va: number;
  pfn: number;
  write: boolean;
  revokedBy: { id: number; event: string } | null;
  message: string;
}

/** An entry of GET /v1/events (the event log's own type). */
export type EventInfo = EventEntry;

export interface PagemapEntry {
  present: boolean;
  pfn: number;
  write: boolean;
  dirty: boolean;
  softDirty: boolean;
}

export class Api {
  constructor(
    readonly base: string,
    readonly token?: string,
  ) {}

  call<T>(method: 'GET' | 'POST' | 'DELETE' | 'PUT', path: string, body?: unknown, timeoutMs = 60_000): Promise<T> {
    return apiRequest<T>({ base: this.base, token: this.token }, method, path, body, timeoutMs);
  }

  get<T>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }
  post<T>(path: string, body: unknown = {}, timeoutMs?: number): Promise<T> {
    return this.call<T>('POST', path, body, timeoutMs);
  }
  del<T>(path: string): Promise<T> {
    return this.call<T>('DELETE', path);
  }

  devices(): Promise<DeviceInfo[]> {
    return this.get<{ items: DeviceInfo[] }>('/v1/devices').then((r) => r.items);
  }
  device(id: number): Promise<DeviceInfo> {
    return this.get<DeviceInfo>(`/v1/devices/${id}`);
  }
  /** One device access per page of [addr, addr + pages): { ok, failed, faults }. */
  dma(id: number, addr: number, pages: number, write: boolean, holdUs?: number): Promise<{ ok: number; failed: number; faults: number }> {
    return this.post(`/v1/devices/${id}/dma`, { addr, length: pages * 4096, write, ...(holdUs !== undefined ? { holdUs } : {}) });
  }
  faults(id: number, f: Record<string, unknown>): Promise<unknown> {
    return this.post(`/v1/devices/${id}/faults`, f);
  }
  mirror(id: number, addr: number, pages: number): Promise<number[]> {
    return this.get<{ pfns: number[] }>(`/v1/devices/${id}/mirror?addr=${addr}&pages=${pages}`).then((r) => r.pfns);
  }
  pagemap(pid: number, addr: number, pages: number): Promise<PagemapEntry[]> {
    return this.get<{ items: PagemapEntry[] }>(`/v1/processes/${pid}/pagemap?addr=${addr}&pages=${pages}`).then((r) => r.items);
  }
  async lastEventId(): Promise<number> {
    const r = await this.get<{ items: EventInfo[]; nextSince: number }>('/v1/events?limit=1');
    return r.items.length ? r.items[r.items.length - 1].id : 0;
  }
  /** Every event of pid after `since`, paging through. */
  async events(pid: number, since: number): Promise<EventInfo[]> {
    const out: EventInfo[] = [];
    for (;;) {
      const r = await this.get<{ items: EventInfo[]; nextSince: number }>(`/v1/events?pid=${pid}&since=${since}&limit=10000`);
      out.push(...r.items);
      if (r.items.length < 10000) return out;
      since = r.nextSince;
    }
  }
}
