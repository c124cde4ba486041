/**
 * Who may use the notifier channel, and for which processes.
 *
 * DEVMIRROR_TOKENS lists `token=grant` pairs separated by `;`, where a grant is `*` (every process)
 * or a comma-separated list of pids and process names, e.g. `s3cret=demo,42;ci=*`. Without it, the
 * embedded default token `devmirror-local` grants every process: for local use only, and the
 * service warns about it at start.
 */
import { Buffer } from 'node:buffer';
import { timingSafeEqual } from 'node:crypto';
import { DevmirrorError } from '../errors.js';

export const DEFAULT_TOKEN = 'devmirror-local';

export interface Grant {
  readonly token: string;
  readonly all: boolean;
  readonly pids: ReadonlySet<number>;
  readonly names: ReadonlySet<string>;
}

export class TokenTable {
  private readonly grants: Grant[];
  constructor(
    grants: Grant[],
    /** True when the table is the embedded default (no DEVMIRROR_TOKENS). */
    readonly usingDefault = false,
  ) {
    this.grants = grants;
  }

  static parse(spec: string | undefined): TokenTable {
    if (spec === undefined || spec.trim() === '') {
      return new TokenTable([{ token: DEFAULT_TOKEN, all: true, pids: new Set(), names: new Set() }], true);
    }
    const grants: Grant[] = [];
    for (const part of spec.split(';')) {
      if (part.trim() === '') continue;
      const eq = part.indexOf('=');
      const token = (eq < 0 ? part : part.slice(0, eq)).trim();
      const rest = eq < 0 ? '' : part.slice(eq + 1).trim();
      if (token.length < 8) throw new DevmirrorError('DM_ERR_CONFIG', `DEVMIRROR_TOKENS: a token must have at least 8 characters (got "${token}")`);
      if (rest === '') throw new DevmirrorError('DM_ERR_CONFIG', `DEVMIRROR_TOKENS: token ${token.slice(0, 3)}... grants nothing (use =* or =pid,name)`);
      const items = rest.split(',').map((s) => s.trim()).filter(Boolean);
      const pids = new Set<number>();
      const names = new Set<string>();
      let all = false;
      for (const it of items) {
        if (it === '*') all = true;
        else if (/^\d+$/.test(it)) pids.add(Number(it));
        else names.add(it);
      }
      grants.push({ token, all, pids, names });
    }
    if (grants.length === 0) throw new DevmirrorError('DM_ERR_CONFIG', 'DEVMIRROR_TOKENS lists no token');
    return new TokenTable(grants);
  }

  /** The grant of a token, or null (constant-time comparison against every known token). */
  check(token: string | undefined | null): Grant | null {
    if (!token) return null;
    const t = Buffer.from(token);
    let found: Grant | null = null;
    for (const g of this.grants) {
      const k = Buffer.from(g.token);
      if (k.length === t.length && timingSafeEqual(k, t)) found = g;
    }
    return found;
  }

  static allows(g: Grant, proc: { pid: number; name: string }): boolean {
    return g.all || g.pids.has(proc.pid) || g.names.has(proc.name);
  }
}
