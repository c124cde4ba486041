/**
 * Node defines `performance`, `Buffer` and `process` on globalThis as accessors: every read of one
 * in optimized code is an inline-cache miss that calls the getter: 5 to 15 ns more a call of
 * performance.now() or Buffer.allocUnsafe than through an import, warm, on the Xeon host (11-29,
 * bench/experiments/module-globals.mjs). devmirror's modules take them from
 * node:perf_hooks, node:buffer and node:process instead, as a module binding is a constant. This
 * test keeps it so: a module whose code (comments aside) reads one of them as a value imports it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(__dirname, '..', '..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name !== 'gen') out.push(...sources(p));
    } else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The code without comments and string literals (a rough strip, enough for identifiers). */
function code(text: string): string {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .replace(/'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|`(?:[^`\\]|\\.)*`/g, "''");
}

const RULES = [
  { name: 'performance', use: /(?<![\w.$])performance\./, imported: /^import \{[^}]*\bperformance\b[^}]*\} from 'node:perf_hooks';/m },
  { name: 'Buffer', use: /(?<![\w.$])Buffer\.\w+\(/, imported: /^import \{[^}]*\bBuffer\b[^}]*\} from 'node:buffer';/m },
  { name: 'process', use: /(?<![\w.$])process\.(nextTick|hrtime)\b/, imported: /^import process from 'node:process';/m },
];

describe('module globals', () => {
  const files = [...sources(join(root, 'src')), ...sources(join(root, 'workers'))];

  it('finds the sources', () => {
    expect(files.length).toBeGreaterThan(50);
  });

  it('every module that reads performance, Buffer or process.nextTick/hrtime imports it', () => {
    const missing: string[] = [];
    for (const f of files) {
      const text = readFileSync(f, 'utf8');
      const c = code(text);
      for (const r of RULES) if (r.use.test(c) && !r.imported.test(text)) missing.push(`${relative(root, f)}: ${r.name}`);
    }
    expect(missing).toEqual([]);
  });

  it('the rules see a use and an import (the check can fail)', () => {
    const bad = "const t = performance.now();\nconst b = Buffer.allocUnsafe(4);\nprocess.nextTick(f);";
    for (const r of RULES) {
      expect(r.use.test(code(bad))).toBe(true);
      expect(r.imported.test(bad)).toBe(false);
    }
    expect(RULES.some((r) => r.use.test(code('// performance.now() in a comment\nconst s = "Buffer.from(x)";')))).toBe(false);
  });
});
