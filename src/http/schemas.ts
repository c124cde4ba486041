/** Shared TypeBox schemas and conversions for the control plane. */
import { Buffer } from 'node:buffer';
import { Type, type Static } from '@sinclair/typebox';
import { DevmirrorError } from '../errors.js';
import { PROT, protNames, type ProtName } from '../kernel/vma.js';

export const Address = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'bytes' });
export const Length = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'bytes' });
export const ProtList = Type.Array(Type.Union([Type.Literal('read'), Type.Literal('write'), Type.Literal('exec')]), {
  maxItems: 3,
  uniqueItems: true,
});
export const PidParams = Type.Object({ pid: Type.Integer({ minimum: 0 }) });
export type PidParams = Static<typeof PidParams>;
export const ErrorReply = Type.Object(
  { code: Type.String(), message: Type.String() },
  { additionalProperties: true, description: 'A typed error (see docs/errors.md)' },
);
export const Empty = Type.Object({}, { additionalProperties: false });

export function protBits(names: readonly ProtName[]): number {
  let p = PROT.NONE;
  for (const n of names) p |= n === 'read' ? PROT.READ : n === 'write' ? PROT.WRITE : PROT.EXEC;
  return p;
}
export { protNames };

/** "4096", "0x1000" -> 4096; anything else is DM_ERR_BAD_ADDRESS. */
export function parseAddress(name: string, raw: unknown, def?: number): number {
  if (raw === undefined || raw === '') {
    if (def !== undefined) return def;
    throw new DevmirrorError('DM_ERR_VALIDATION', `${name} is required`);
  }
  if (typeof raw === 'number') {
    if (Number.isSafeInteger(raw) && raw >= 0) return raw;
  } else if (typeof raw === 'string') {
    const s = raw.trim();
    const v = /^0x[0-9a-f]+$/i.test(s) ? Number.parseInt(s.slice(2), 16) : /^\d+$/.test(s) ? Number(s) : NaN;
    if (Number.isSafeInteger(v)) return v;
  }
  throw new DevmirrorError('DM_ERR_BAD_ADDRESS', `${name} must be a decimal or 0x-prefixed non-negative integer`);
}

export function decodeBase64(name: string, s: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 === 1) {
    throw new DevmirrorError('DM_ERR_VALIDATION', `${name} must be base64`);
  }
  return new Uint8Array(Buffer.from(s, 'base64'));
}
