/**
 * Interoperability with stock `protoc` (Debian's protobuf-compiler): every message of the schema,
 * with every field set to a non-default value (64-bit fields above 2^53), is encoded by the
 * project's codec into a golden file under test/fixtures/golden and decoded by `protoc --decode`,
 * and the reverse: `protoc --encode` of the same values is decoded by the codec. Both are compared
 * field by field. The golden files also pin the encoding byte for byte (UPDATE_GOLDEN=1 rewrites).
 *
 * protobufjs reflection is used here only to enumerate the schema's fields (the product code goes
 * through src/channel/codec.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage, messageTypes } from '../../src/channel/codec.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const protoFile = 'proto/devmirror/v1/notifier.proto';
const goldenDir = `${root}test/fixtures/golden`;
const hasProtoc = spawnSync('protoc', ['--version']).status === 0;
if (!hasProtoc && process.env.CI === 'true') throw new Error('protoc is required under CI=true (apt-get install protobuf-compiler)');

const schema = protobuf.loadSync(`${root}${protoFile}`);
const pkg = schema.lookup('devmirror.v1') as protobuf.Namespace;

type Canon = { [field: string]: Array<string | Canon> };

/** protobufjs camel-cases field names; text format shows the schema's snake_case names. */
const snake = (n: string): string => n.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const fieldBySnake = (type: protobuf.Type, name: string): protobuf.Field => {
  const f = type.fieldsArray.find((x) => snake(x.name) === name);
  if (!f) throw new Error(`${type.name} has no field ${name}`);
  return f;
};

/** A deterministic, non-default value for every field of `type` (oneofs: the first member only). */
function sample(type: protobuf.Type, seed: number, depth = 0): Record<string, unknown> {
  const v: Record<string, unknown> = {};
  const skip = new Set<string>();
  for (const o of type.oneofsArray) {
    if (o.name.startsWith('_')) continue; // proto3 optional: a synthetic oneof, set it
    for (const f of o.fieldsArray.slice(1)) skip.add(f.name);
  }
  let i = 0;
  for (const f of type.fieldsArray) {
    i++;
    if (skip.has(f.name)) continue;
    const s = seed * 31 + i;
    const one = (): unknown => scalar(f, s, depth);
    if (f.map) v[f.name] = { [`key${s}`]: one() };
    else if (f.repeated) v[f.name] = [one(), one()];
    else v[f.name] = one();
  }
  return v;
}

function scalar(f: protobuf.Field, s: number, depth: number): unknown {
  f.resolve();
  if (f.resolvedType instanceof protobuf.Enum) {
    const vals = Object.values(f.resolvedType.values).filter((x) => x !== 0);
    return vals[s % vals.length];
  }
  if (f.resolvedType instanceof protobuf.Type) return depth > 2 ? {} : sample(f.resolvedType, s, depth + 1);
  switch (f.type) {
    case 'uint64':
    case 'fixed64':
      return 2n ** 60n + BigInt(s); // above 2^53
    case 'int64':
      return -(2n ** 60n) - BigInt(s);
    case 'uint32':
      return 3_000_000_000 + s;
    case 'int32':
      return -1000 - s;
    case 'bool':
      return true;
    case 'string':
      return `s${s}x`;
    case 'bytes':
      return new Uint8Array([65 + (s % 20), 66, 67]);
    default:
      throw new Error(`no sample for ${f.type}`);
  }
}

/** Canonical form of a value: field -> list of strings or nested forms (what text format shows). */
function canon(type: protobuf.Type, v: Record<string, unknown>): Canon {
  const out: Canon = {};
  for (const f of type.fieldsArray) {
    const x = v[f.name];
    if (x === undefined || x === null) continue;
    f.resolve();
    const one = (y: unknown): string | Canon => {
      if (f.resolvedType instanceof protobuf.Enum) return f.resolvedType.valuesById[Number(y)];
      if (f.resolvedType instanceof protobuf.Type) return canon(f.resolvedType, y as Record<string, unknown>);
      if (y instanceof Uint8Array) return Buffer.from(y).toString('latin1');
      return String(y);
    };
    if (f.map) {
      out[snake(f.name)] = Object.entries(x as Record<string, unknown>).map(([k, y]) => ({ key: [k], value: [one(y)] }));
    } else if (f.repeated) {
      if ((x as unknown[]).length) out[snake(f.name)] = (x as unknown[]).map(one);
    } else {
      const c = one(x);
      // proto3 omits scalar defaults (text format too); optional fields and messages are kept.
      const isDefault = c === '0' || c === '' || c === 'false' || (f.resolvedType instanceof protobuf.Enum && f.resolvedType.values[c as string] === 0);
      if (!isDefault || f.options?.proto3_optional || f.resolvedType instanceof protobuf.Type) out[snake(f.name)] = [c];
    }
  }
  return out;
}

// ---- a small parser and printer for protobuf text format ---------------------------------------

function tokenize(t: string): string[] {
  const out: string[] = [];
  const re = /\s*("(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+)/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(t)) && m[1] !== undefined) out.push(m[1]);
  return out;
}

function unquote(q: string): string {
  return q.slice(1, -1).replace(/\\([0-7]{3}|.)/g, (_, e: string) => (e.length === 3 ? String.fromCharCode(parseInt(e, 8)) : ({ n: '\n', t: '\t', r: '\r' } as Record<string, string>)[e] ?? e));
}

function parseText(tokens: string[], pos = { i: 0 }): Canon {
  const out: Canon = {};
  while (pos.i < tokens.length && tokens[pos.i] !== '}') {
    const name = tokens[pos.i++];
    let val: string | Canon;
    if (tokens[pos.i] === ':') pos.i++;
    if (tokens[pos.i] === '{') {
      pos.i++;
      val = parseText(tokens, pos);
      pos.i++; // }
    } else {
      const tok = tokens[pos.i++];
      val = tok.startsWith('"') ? unquote(tok) : tok;
    }
    (out[name] ??= []).push(val);
  }
  return out;
}

function printText(c: Canon, type: protobuf.Type): string {
  const lines: string[] = [];
  for (const [name, vals] of Object.entries(c)) {
    const f = fieldBySnake(type, name);
    f.resolve();
    for (const v of vals) {
      if (typeof v === 'object') {
        const inner = f.resolvedType instanceof protobuf.Type ? f.resolvedType : null;
        lines.push(`${name} { ${inner ? printText(v, inner) : Object.entries(v).map(([k, x]) => `${k}: ${typeof x[0] === 'string' && k === 'key' ? JSON.stringify(x[0]) : x[0]}`).join(' ')} }`);
      } else if (f.type === 'string' || f.type === 'bytes') lines.push(`${name}: ${JSON.stringify(v)}`);
      else lines.push(`${name}: ${v}`);
    }
  }
  return lines.join('\n');
}

describe.skipIf(!hasProtoc)('protoc interoperability', () => {
  it('the schema compiles with stock protoc', () => {
    execFileSync('protoc', [`-I${root}proto`, '--descriptor_set_out=/dev/null', `${root}${protoFile}`]);
  });

  const types = messageTypes();
  it('covers every message type of the schema', () => {
    const all = pkg.nestedArray.filter((n) => n instanceof protobuf.Type).map((n) => n.name).sort();
    expect([...types].sort()).toEqual(all);
  });

  for (const name of types) {
    it(`${name}: codec -> golden file -> protoc --decode, and protoc --encode -> codec`, () => {
      const type = pkg.lookupType(name);
      const value = sample(type, name.length);
      const expected = canon(type, value);
      const bytes = encodeMessage(name, value);
      mkdirSync(goldenDir, { recursive: true });
      const golden = `${goldenDir}/${name}.bin`;
      if (process.env.UPDATE_GOLDEN === '1' || !existsSync(golden)) writeFileSync(golden, bytes);
      expect(Buffer.from(bytes).equals(readFileSync(golden)), `${name} encodes differently from its golden file`).toBe(true);

      const text = execFileSync('protoc', [`-I${root}proto`, `--decode=devmirror.v1.${name}`, `${root}${protoFile}`], { input: readFileSync(golden) }).toString('latin1');
      expect(parseText(tokenize(text))).toEqual(expected);

      const encoded = execFileSync('protoc', [`-I${root}proto`, `--encode=devmirror.v1.${name}`, `${root}${protoFile}`], { input: printText(expected, type) });
      const back = decodeMessage(name, encoded);
      expect(canon(type, back)).toEqual(expected);
    });
  }
});
