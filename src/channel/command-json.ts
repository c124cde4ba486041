/**
 * JSON of Command arguments and CommandReply values (the `args_json` / `value_json` strings of the
 * channel). Byte arrays travel as `{ "$bytes": "<base64>" }` so that a command carrying page data
 * (dmirror's write, a read's reply) means the same over the socket as over a worker's
 * structured clone. Other clients may send plain JSON; only that one object shape is special.
 */
import { Buffer } from 'node:buffer';
export function commandJson(value: unknown): string {
  return JSON.stringify(value ?? null, (_key, v: unknown) => {
    if (v instanceof Uint8Array) return { $bytes: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
    // Buffer.prototype.toJSON runs before the replacer sees a Buffer: catch its shape too.
    if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
      return { $bytes: Buffer.from((v as { data: number[] }).data).toString('base64') };
    }
    return v;
  });
}

export function parseCommandJson(text: string): unknown {
  return JSON.parse(text, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const keys = Object.keys(v);
      const b = (v as { $bytes?: unknown }).$bytes;
      if (keys.length === 1 && typeof b === 'string') return new Uint8Array(Buffer.from(b, 'base64'));
    }
    return v;
  });
}
