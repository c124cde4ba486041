/**
 * A piscina pool for the load generator's CPU-heavy shards (strace parsing of large traces), so
 * that the thread driving the kernel keeps answering device messages meanwhile.
 * Small inputs are handled inline: a pool's thread start costs more than they do.
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { parseStrace, type ParsedTrace } from './strace.js';

/** Below this many characters, parse inline. */
const INLINE_PARSE_CHARS = 256 * 1024;

function workerFile(): { filename: string; execArgv: string[] } {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return { filename: fileURLToPath(new URL('./shard-worker.ts', here)), execArgv: ['--import', 'tsx'] };
  return { filename: fileURLToPath(new URL('./shard-worker.js', here)), execArgv: [] };
}

let pool: Piscina | null = null;
function getPool(): Piscina {
  if (!pool) {
    const w = workerFile();
    pool = new Piscina({ filename: w.filename, execArgv: w.execArgv, maxThreads: 1, idleTimeout: 2000 });
  }
  return pool;
}

export async function parseStraceSharded(text: string, inlineBelow = INLINE_PARSE_CHARS): Promise<ParsedTrace> {
  if (text.length < inlineBelow) return parseStrace(text);
  return (await getPool().run({ task: 'parse', text })) as ParsedTrace;
}

export async function closeShards(): Promise<void> {
  const p = pool;
  pool = null;
  await p?.destroy();
}
