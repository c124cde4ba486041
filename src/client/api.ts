/**
 * Calls to the kernel service's HTTP API from command-line clients (`devmirror device` looking up
 * names, `devmirror bench --target`, `devmirror trigger`, the conformance suite). A service that cannot be reached is `DM_ERR_UNREACHABLE`; an
 * HTTP error keeps the service's own error code (`code` on the thrown error), so callers can count
 * refusals by code.
 *
 * A service that requires tokens (DEVMIRROR_API_AUTH, docs/control-plane.md) gets the client's
 * token as `Authorization: Bearer`; one that does not ignores it.
 */
import { DevmirrorError } from '../errors.js';

/** Where the API is: `http(s)://host:port`, or that with the token to present. */
export type ApiEndpoint = string | { base: string; token?: string };

export async function apiRequest<T>(api: ApiEndpoint, method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, timeoutMs = 60_000): Promise<T> {
  const { base, token } = typeof api === 'string' ? { base: api, token: undefined } : api;
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  let res: Response;
  try {
    res = await fetch(base + path, {
      method,
      headers,
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
    if (res.status === 401) message += token ? ' (the token given was refused)' : ' (give one with --token or DEVMIRROR_TOKEN)';
    throw Object.assign(new Error(`${method} ${path}: HTTP ${res.status} ${code}: ${message}`), { code });
  }
  return (text ? JSON.parse(text) : {}) as T;
}
