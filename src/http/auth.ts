/**
 * Tokens on the control plane (issue #8; docs/control-plane.md "Security").
 *
 * When the API requires tokens (`DEVMIRROR_API_AUTH`: by default exactly when DEVMIRROR_TOKENS is
 * set), every request carries `Authorization: Bearer <token>`, a token of the same table as the
 * notifier channel, and acts with that token's grant:
 *
 * - every route declares its access in its config (`config: { access }`); a route without one
 *   fails to register, so a new route cannot be added unprotected by omission;
 * - `public` routes need no token: liveness and readiness, the metrics (bounded labels, no pids,
 *   names, addresses or data), the dashboard page (data comes from the API), the OpenAPI document
 *   and its UI, and the `.proto`;
 * - `token` routes need any token and show only what the grant covers (lists, the stream);
 * - `process` routes act on the processes the request names (`:pid`, a body `pid` or `process`);
 * - `device` routes act on a device: a worker device goes with its process, an external client with
 *   the token it connected with;
 * - `machine` routes act on the whole machine (reclaim, compaction, KSM, writeback, daemons, files,
 *   the audit) and need a `*` grant;
 * - a function decides where the answer depends on the body (reclaim of one range vs the machine).
 *
 * A missing or unknown token is 401 DM_ERR_UNAUTHORIZED; a process, device or operation the grant
 * does not cover is 403 DM_ERR_FORBIDDEN, with the same answer whether it exists or not (no probing).
 * With a `*` grant, a missing process is the usual 404.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { DevmirrorError } from '../errors.js';
import { TokenTable, type Grant } from '../channel/tokens.js';
import type { Service } from '../service.js';

export type Access = 'public' | 'token' | 'process' | 'device' | 'machine' | ((req: FastifyRequest, guard: Guard) => void);

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    /** The request's grant; null when the API does not require tokens. */
    grant: Grant | null;
  }
}

/** Shorthand for a route's options: `{ config: access('process'), schema: ... }`. */
export const access = (a: Access): { access: Access } => ({ access: a });

/** What one request's grant covers. Without a grant (tokens not required) it covers everything. */
export class Guard {
  constructor(
    private readonly svc: Service,
    readonly grant: Grant | null,
  ) {}

  /** Every process, and the machine-wide operations. */
  get all(): boolean {
    return this.grant === null || this.grant.all;
  }

  /** Whether the grant covers this pid (a process that exited is covered only by its pid). */
  pid(pid: number): boolean {
    if (this.all || this.grant!.pids.has(pid)) return true;
    const p = this.svc.kernel.findProcess(pid);
    return p !== undefined && TokenTable.allows(this.grant!, p);
  }

  /** Refuses (403) a process the grant does not cover, whether or not it exists. */
  process(pidOrName: number | string): void {
    if (this.all) return;
    const ok = typeof pidOrName === 'number' ? this.pid(pidOrName) : this.grant!.names.has(pidOrName);
    if (!ok) throw new DevmirrorError('DM_ERR_FORBIDDEN', `process ${JSON.stringify(pidOrName)} is not granted to this token`);
  }

  /** Refuses (403) a machine-wide operation without a `*` grant. */
  machine(what: string): void {
    if (!this.all) throw new DevmirrorError('DM_ERR_FORBIDDEN', `${what} acts on the whole machine: it needs a token granted * (DEVMIRROR_TOKENS)`);
  }

  /** Whether the grant covers a device: a worker by its process, an external client by its token. */
  deviceVisible(id: number): boolean {
    if (this.all) return true;
    const w = this.svc.devices.devices.get(id);
    if (w) return this.pid(w.pid);
    const e = this.svc.channel.devices.get(id);
    return e !== undefined && e.grant !== null && e.grant.token === this.grant!.token;
  }

  device(id: number): void {
    if (!this.deviceVisible(id)) throw new DevmirrorError('DM_ERR_FORBIDDEN', `device ${id} is not granted to this token`);
  }

  /** The processes a request names: `:pid`, and a body's `pid` and `process`. */
  named(req: FastifyRequest): void {
    const params = (req.params ?? {}) as { pid?: number };
    const body = (req.body ?? {}) as { pid?: unknown; process?: unknown };
    if (params.pid !== undefined) this.process(Number(params.pid));
    if (typeof body.pid === 'number') this.process(body.pid);
    if (typeof body.process === 'string') this.process(body.process);
  }
}

/** The guard of a request (for handlers that filter what they list). */
export function guardOf(svc: Service, req: FastifyRequest): Guard {
  return new Guard(svc, req.grant);
}

export interface RouteAccess {
  method: string;
  url: string;
  access: Access;
}
const TABLES = new WeakMap<FastifyInstance, RouteAccess[]>();

/** Every route registered on `app` after installAuth, with its access (HEAD routes included). */
export function routeAccess(app: FastifyInstance): readonly RouteAccess[] {
  return TABLES.get(app) ?? [];
}

/** A bearer token from the Authorization header, or null. */
function bearer(req: FastifyRequest): string | null {
  const h = req.headers.authorization;
  if (!h) return null;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : null;
}

/**
 * Installs the checks; call before any route is added. `enabled` false: no token is asked for,
 * every request acts with full rights (the embedded local default), but every route must still
 * declare its access.
 */
export function installAuth(app: FastifyInstance, svc: Service, enabled: boolean): void {
  app.decorateRequest('grant', null);
  const table: RouteAccess[] = [];
  TABLES.set(app, table);
  app.addHook('onRoute', (route) => {
    const config = (route.config ??= {}) as { access?: Access };
    // The OpenAPI document and its UI (@fastify/swagger-ui's routes) describe the API: public.
    if (config.access === undefined && (route.url === '/docs' || route.url.startsWith('/docs/'))) config.access = 'public';
    if (config.access === undefined) throw new Error(`route ${route.method} ${route.url} declares no access (src/http/auth.ts)`);
    for (const method of [route.method].flat()) table.push({ method, url: route.url, access: config.access });
    const schema = (route.schema ??= {}) as { hide?: boolean; security?: unknown };
    if (!schema.hide) schema.security = config.access === 'public' ? [] : [{ bearer: [] }];
  });
  if (!enabled) return;
  app.addHook('onRequest', async (req, reply) => {
    const a = req.routeOptions.config.access;
    if (a === 'public') return;
    const token = bearer(req);
    const grant = token && !token.startsWith('worker:') ? svc.channel.tokens.check(token) : null;
    if (!grant) {
      reply.header('www-authenticate', 'Bearer realm="devmirror"');
      throw new DevmirrorError('DM_ERR_UNAUTHORIZED', token ? 'unknown token' : 'a token is required: Authorization: Bearer <token> (one of DEVMIRROR_TOKENS)');
    }
    req.grant = grant;
  });
  // After validation: params and body are parsed and typed.
  app.addHook('preHandler', async (req) => {
    const a = req.routeOptions.config.access;
    if (a === undefined || a === 'public' || a === 'token') return;
    const g = guardOf(svc, req);
    if (typeof a === 'function') return a(req, g);
    if (a === 'machine') return g.machine(`${req.method} ${req.routeOptions.url}`);
    if (a === 'process') return g.named(req);
    if (a === 'device') return g.device(Number((req.params as { id: number }).id));
  });
}
