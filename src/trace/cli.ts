/**
 * `devmirror trace`: downloads GET /v1/trace from a running service into a file for
 * https://ui.perfetto.dev (docs/trace.md).
 */
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { DevmirrorError, ERROR_CODES, type ErrorCode } from '../errors.js';

export const TRACE_USAGE = `usage: devmirror trace --url http://HOST:PORT [--token T] [--out FILE] [--pid N] [--since N] [--limit N]
  downloads the service's trace (GET /v1/trace) as a Chrome trace JSON file, to open in
  https://ui.perfetto.dev; --out defaults to devmirror-trace-BOOTID.json, "-" writes to stdout;
  --token (or DEVMIRROR_TOKEN) when the API requires one; --pid one process (and the machine-wide
  activities); --since N the entries after metadata.nextSince N of an earlier download; --limit the
  newest N entries (default 10000)`;

export async function traceMain(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<string> {
  const { values } = parseArgs({
    args: argv,
    options: { url: { type: 'string' }, token: { type: 'string' }, out: { type: 'string' }, pid: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    out(TRACE_USAGE + '\n');
    return '';
  }
  const bad = (m: string): never => {
    throw new DevmirrorError('DM_ERR_VALIDATION', `${m}\n${TRACE_USAGE}`);
  };
  if (!values.url) bad('--url is required');
  let url: URL;
  try {
    url = new URL('/v1/trace', values.url!.replace(/^ws/, 'http'));
  } catch {
    return bad(`--url "${values.url}" is not a URL`);
  }
  for (const k of ['pid', 'since', 'limit'] as const) {
    const v = values[k];
    if (v === undefined) continue;
    if (!/^\d+$/.test(v)) bad(`--${k} must be a non-negative integer`);
    url.searchParams.set(k, v);
  }
  const token = values.token ?? process.env.DEVMIRROR_TOKEN;
  const r = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} }).catch((e: Error) => {
    throw new DevmirrorError('DM_ERR_UNREACHABLE', `cannot reach ${url.origin}: ${(e.cause as Error | undefined)?.message ?? e.message}`);
  });
  const body = await r.text();
  if (!r.ok) {
    // The service's typed error, passed on as it is.
    let e: { code?: string; message?: string } = {};
    try {
      e = JSON.parse(body) as typeof e;
    } catch {
      // not JSON: a proxy or another server
    }
    const code = (ERROR_CODES as string[]).includes(e.code ?? '') ? (e.code as ErrorCode) : 'DM_ERR_UNREACHABLE';
    throw new DevmirrorError(code, `GET ${url}: ${r.status} ${e.message ?? body.slice(0, 200)}`);
  }
  const meta = (JSON.parse(body) as { metadata?: { bootId?: number; entries?: number; dropped?: number; nextSince?: number } }).metadata ?? {};
  const file = values.out ?? `devmirror-trace-${meta.bootId ?? 'unknown'}.json`;
  if (file === '-') {
    out(body);
    return file;
  }
  writeFileSync(file, body);
  out(`devmirror trace: ${meta.entries} entries (next --since ${meta.nextSince}, ${meta.dropped} dropped before this read) written to ${file}; open it in https://ui.perfetto.dev\n`);
  return file;
}
