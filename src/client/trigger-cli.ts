/**
 * `devmirror trigger ORIGIN --url http://HOST:PORT [--token T] --pid N --addr A --length L [--node N]`:
 * POST /v1/kernel/trigger, then one line per invalidation it caused.
 */
import { DevmirrorError } from '../errors.js';
import { parseArgs } from 'node:util';
import { apiRequest } from './api.js';
import { ORIGINS } from '../notifier/range.js';

export const TRIGGER_USAGE = `usage: devmirror trigger ORIGIN --url http://HOST:PORT [--token T] --pid N --addr A --length L [--node N]
  ORIGIN: ${ORIGINS.join(' ')}
  addresses and lengths in decimal or 0x hex; the token also comes from DEVMIRROR_TOKEN`;

export interface TriggerReply {
  origin: string;
  pid: number;
  did: string;
  result: Record<string, unknown>;
  events: Array<{ id: number; pid: number; event: string; start: number; end: number | string; origin: string; blockable: boolean; owner: number | null; result: string }>;
  note?: string;
}

const num = (name: string, v: string | undefined): number => {
  if (v === undefined) throw new DevmirrorError('DM_ERR_VALIDATION', `--${name} is required\n${TRIGGER_USAGE}`);
  const n = /^0x[0-9a-f]+$/i.test(v) ? Number.parseInt(v.slice(2), 16) : /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) throw new DevmirrorError('DM_ERR_VALIDATION', `--${name} must be a decimal or 0x number`);
  return n;
};

const hex = (v: number | string): string => (typeof v === 'number' ? `0x${v.toString(16)}` : v);

export function formatTrigger(r: TriggerReply): string {
  const lines = [`${r.origin} on pid ${r.pid}: ${r.did}`, `  result: ${JSON.stringify(r.result)}`];
  if (r.note) lines.push(`  note: ${r.note}`);
  lines.push(`  ${r.events.length} invalidation${r.events.length === 1 ? '' : 's'}:`);
  for (const e of r.events) {
    const extra = [e.blockable ? '' : 'non-blockable', e.owner === null ? '' : `owner ${e.owner}`, e.result === 'ok' ? '' : e.result].filter(Boolean).join(', ');
    lines.push(`  #${e.id} pid ${e.pid} ${e.event} [${hex(e.start)}, ${hex(e.end)}) ${e.origin}${extra ? ` (${extra})` : ''}`);
  }
  return lines.join('\n');
}

/** Runs the command; resolves to the exit code. */
export async function triggerMain(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s), err: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { url: { type: 'string' }, token: { type: 'string' }, pid: { type: 'string' }, addr: { type: 'string' }, length: { type: 'string' }, node: { type: 'string' }, help: { type: 'boolean' } },
    });
    if (values.help) {
      out(TRIGGER_USAGE + '\n');
      return 0;
    }
    const origin = positionals[0];
    if (!origin || !(ORIGINS as readonly string[]).includes(origin)) throw new DevmirrorError('DM_ERR_VALIDATION', `unknown or missing ORIGIN ${JSON.stringify(origin ?? '')}\n${TRIGGER_USAGE}`);
    if (!values.url) throw new DevmirrorError('DM_ERR_VALIDATION', `--url is required\n${TRIGGER_USAGE}`);
    const body = { origin, pid: num('pid', values.pid), addr: num('addr', values.addr), length: num('length', values.length), ...(values.node !== undefined ? { node: num('node', values.node) } : {}) };
    const token = values.token ?? process.env.DEVMIRROR_TOKEN;
    const r = await apiRequest<TriggerReply>({ base: values.url.replace(/\/+$/, ''), token }, 'POST', '/v1/kernel/trigger', body);
    out(formatTrigger(r) + '\n');
    return 0;
  } catch (e) {
    err(`devmirror: ${(e as { code?: string }).code ?? 'error'}: ${(e as Error).message}\n`);
    return 1;
  }
}
