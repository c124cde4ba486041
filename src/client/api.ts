/**
 * Calls to the kernel service's HTTP API from command-line clients (`devmirror device` looking up
 * names, `devmirror bench --target`). A service that cannot be reached is `DM_ERR_UNREACHABLE`; an
 * HTTP error keeps the service's own error code (`code` on the thrown error), so callers can count
 * refusals by code.
 */
import { DevmirrorError } from '../errors.js';

export async function apiRequest<T>(base: string, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = 60_000): Promise<T> {
  let res: Response;
  try {
    res = await fetch(base + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    throw new DevmirrorError('DM_ERR_UNREACHABLE', `${method} ${base}${path}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) {
    let code = 'DM_ERR_CONFLICT';
    let message = text;
    try {
      const j = JSON.parse(text) as { code?: string; message?: string };
      code = j.code ?? code;
      message = j.message ?? text;
    } catch {
      // not JSON: keep the text
    }
    throw Object.assign(new Error(`${method} ${path}: HTTP ${res.status} ${code}: ${message}`), { code });
  }
  return (text ? JSON.parse(text) : {}) as T;
}
