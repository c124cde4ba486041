/**
 * Reply schemas (TypeBox) for the control plane: they document every reply in the OpenAPI document
 * and let fastify serialise with a compiled stringifier. Objects stay open (`additionalProperties`)
 * where a reply carries more than its documented core, so a schema never drops data; every error
 * reply of every route is the catalogue's `{ code, message }` (installed by `installReplySchemas`).
 */
import { Type, type TSchema } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ErrorReply } from './schemas.js';

const open = { additionalProperties: true } as const;
const Int = Type.Integer();
const Num = Type.Number();
/** A range end: bytes, or "0xffffffffffffffff" for ULONG_MAX (API.md). */
export const End = Type.Union([Type.Integer(), Type.String()]);
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const R = {
  Ok: Type.Object({}, { ...open, description: 'done' }),
  Pid: Type.Object({ pid: Int, name: Type.String() }, open),
  Addr: Type.Object({ addr: Int }, open),
  File: Type.Object({ id: Int, size: Int }, open),
  Data: Type.Object({ data: Type.String({ description: 'base64' }) }, open),
  Written: Type.Object({ written: Int }, open),
  Process: Type.Object(
    { pid: Int, name: Type.String(), parent: Nullable(Int), state: Type.String(), rss: Int, vmas: Int, subscriptions: Int, invalidateSeq: Int },
    open,
  ),
  Maps: Type.Object({ items: Type.Array(Type.Object({ start: Int, end: Int, prot: Type.Array(Type.String()) }, open)) }, open),
  Pagemap: Type.Object(
    {
      items: Type.Array(
        Type.Object(
          {
            addr: Int,
            present: Type.Boolean(),
            pfn: Nullable(Int),
            write: Type.Boolean(),
            dirty: Type.Boolean(),
            young: Type.Boolean(),
            softDirty: Type.Boolean(),
            swapped: Type.Boolean(),
            devicePrivate: Nullable(Int),
            exclusive: Type.Boolean(),
            protnone: Type.Boolean(),
            huge: Type.Boolean(),
            zeroPage: Type.Boolean(),
            node: Nullable(Int),
          },
          open,
        ),
      ),
    },
    open,
  ),
  /** Kernel activities report what they did; each activity its own counters. */
  Activity: Type.Object({}, { ...open, description: 'what the activity did (pages scanned, unmapped, migrated, retried, ...)' }),
  Events: Type.Object(
    {
      items: Type.Array(
        Type.Object(
          {
            id: Int,
            pid: Int,
            start: Int,
            end: End,
            event: Type.String(),
            blockable: Type.Boolean(),
            owner: Nullable(Int),
            origin: Type.String(),
            result: Type.String(),
            ackUs: Num,
            totalUs: Num,
            subscribers: Type.Array(Type.Object({ label: Type.String(), kind: Type.String(), deviceId: Nullable(Int), deviceKind: Nullable(Type.String()), result: Type.String(), ackUs: Num }, open)),
          },
          open,
        ),
      ),
      nextSince: Int,
      dropped: Int,
      bootId: Int,
    },
    open,
  ),
  Device: Type.Object(
    {
      id: Int,
      name: Type.String(),
      kind: Type.String(),
      transport: Type.Union([Type.Literal('worker'), Type.Literal('external')]),
      state: Type.String(),
      counters: Type.Record(Type.String(), Num),
      sanitizer: Type.Object({ checked: Int }, open),
    },
    open,
  ),
  Created: Type.Object({ id: Int, name: Type.String() }, open),
  Sweep: Type.Object({ ok: Int, failed: Int, faults: Int }, open),
  Dmirror: Type.Object({ cpages: Int, faults: Int, data: Type.Optional(Type.String({ description: 'base64' })) }, open),
  Mirror: Type.Object({ id: Int, addr: Int, pfns: Type.Array(Int, { description: 'frame per page, -1 where the device maps nothing' }) }, open),
  Health: Type.Object({ status: Type.String(), bootId: Type.Optional(Int) }, open),
};

export const list = <T extends TSchema>(t: T) => Type.Object({ items: Type.Array(t) }, open);

/** Every route answers errors as `{ code, message }`; installed before the routes are added. */
export function installReplySchemas(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const schema = (route.schema ??= {}) as { response?: Record<string, unknown>; hide?: boolean };
    if (schema.hide) return;
    schema.response ??= {};
    schema.response['4xx'] ??= ErrorReply;
    schema.response['5xx'] ??= ErrorReply;
  });
}
