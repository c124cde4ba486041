/** Percentiles with one vocabulary for every benchmark: p50, p90, p99, p99_9, max (microseconds). */
import process from 'node:process';
import os from 'node:os';

export interface Percentiles {
  n: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p99_9: number;
  max: number;
}

export function percentiles(samples: ArrayLike<number>): Percentiles {
  const a = Float64Array.from(samples).sort();
  const n = a.length;
  const at = (q: number): number => (n === 0 ? NaN : a[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += a[i];
  return { n, mean: n ? sum / n : NaN, p50: at(0.5), p90: at(0.9), p99: at(0.99), p99_9: at(0.999), max: n ? a[n - 1] : NaN };
}

export function machine(): Record<string, unknown> {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    totalMemMiB: Math.round(os.totalmem() / 1048576),
    date: new Date().toISOString(),
  };
}

export function fmt(us: number): string {
  if (!Number.isFinite(us)) return '-';
  if (us >= 1000) return `${(us / 1000).toFixed(2)} ms`;
  if (us >= 10) return `${us.toFixed(1)} us`;
  return `${us.toFixed(2)} us`;
}

export function table(rows: Array<Record<string, string | number>>): string {
  if (rows.length === 0) return '';
  const cols = Object.keys(rows[0]);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (vals: string[]): string => vals.map((v, i) => v.padEnd(width[i])).join('  ');
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => String(r[c]))))].join('\n');
}

/** Microseconds elapsed since `t0` (a process.hrtime.bigint() value). */
export function usSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1000;
}

/** Bucket i counts samples in [2^i, 2^(i+1)) microseconds (bucket 0 also takes those below 1). */
export function log2Histogram(samples: readonly number[]): number[] {
  const b = new Array<number>(28).fill(0);
  for (const v of samples) b[Math.max(0, Math.min(27, Math.floor(Math.log2(Math.max(1, v)))))]++;
  return b;
}

/** The spread of one figure over repeated runs (a ratio per pass of a bench), and how many exceed `limit`. */
export interface Spread {
  n: number;
  min: number;
  /** The middle value; for an even count, the mean of the middle two. */
  median: number;
  max: number;
  above: number;
}

export function spread(values: readonly number[], limit = Infinity): Spread {
  const a = [...values].sort((x, y) => x - y);
  const n = a.length;
  if (n === 0) return { n, min: NaN, median: NaN, max: NaN, above: 0 };
  const mid = n >> 1;
  const median = n % 2 === 1 ? a[mid] : (a[mid - 1] + a[mid]) / 2;
  return { n, min: a[0], median, max: a[n - 1], above: a.filter((v) => v > limit).length };
}
