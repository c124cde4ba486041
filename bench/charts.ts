/**
 * Draws the headline charts of docs/benchmarks.md from the JSON the benchmarks wrote:
 *
 *   npm run bench:charts            # reads docs/data/*.json, writes docs/charts/*.svg
 *   npm run bench:charts -- --data=DIR --out=DIR
 *                           --handshake=FILE (in DIR; default handshake-pinned-1128.json, the
 *                           sequential run of 2026-11-28 04:12 with N = 1 pinned: pass 1)
 *                           --channel=FILE (default channel-placement-1128.json, 04:37; at N = 1
 *                           the `apart` placement, the client on a CPU of its own)
 *
 * Each chart is drawn only if its data file exists, so a partial set of runs still charts what
 * it has. The charts plot exactly what the runs measured: nothing is smoothed or averaged across
 * runs.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { barChart, fmtUs, lineChart, type Series } from '../src/loadgen/svg.js';
import type { BenchReport } from '../src/loadgen/runner.js';
import type { SweepReport } from '../src/loadgen/sweep.js';
import type { Percentiles } from './lib/stats.js';

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, '').split('=') as [string, string]));
const DATA = args.get('data') ?? 'docs/data';
const OUT = args.get('out') ?? 'docs/charts';
const HANDSHAKE = args.get('handshake') ?? 'handshake-pinned-1128.json';
const CHANNEL = args.get('channel') ?? 'channel-placement-1128.json';

interface HandshakeResult {
  variant: string;
  n: number;
  lat: Percentiles;
}

function load<T>(name: string): T | null {
  const f = join(DATA, name);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as T) : null;
}

const written: string[] = [];
function write(name: string, svg: string): void {
  if (!svg) return;
  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, name), svg + '\n');
  written.push(join(OUT, name));
}

const ratio = (v: number): string => `${v.toFixed(2)}x`;

function handshake(): void {
  const d = load<{ handshake?: HandshakeResult[] }>(HANDSHAKE);
  if (!d?.handshake) return;
  const ns = [...new Set(d.handshake.map((r) => r.n))].sort((a, b) => a - b);
  const at = (variant: string, n: number): number => d.handshake!.find((r) => r.variant === variant && r.n === n)?.lat.p50 ?? NaN;
  const series: Series[] = [
    { name: 'devmirror, DMA idle', ys: ns.map((n) => at('devmirror (DMA idle)', n)), color: '#2b6cb0' },
    { name: 'devmirror, DMA running', ys: ns.map((n) => at('devmirror (DMA running)', n)), color: '#6b46c1' },
    { name: 'bare Atomics, blocking', ys: ns.map((n) => at('ref:blocking', n)), color: '#2f855a', dashed: true },
    { name: 'bare Atomics, spin then park', ys: ns.map((n) => at('ref:spin', n)), color: '#b7791f', dashed: true },
    ...(d.handshake.some((r) => r.variant === 'ref:spin-range') ? [{ name: 'the same, carrying a range in a call slot', ys: ns.map((n) => at('ref:spin-range', n)), color: '#975a16', dashed: true }] : []),
    { name: 'bare Atomics, waitAsync', ys: ns.map((n) => at('ref:waitAsync', n)), color: '#319795', dashed: true },
    { name: 'postMessage handshake', ys: ns.map((n) => at('ref:postMessage', n)), color: '#c05621', dashed: true },
  ];
  write('handshake-p50.svg', lineChart({ title: 'In-process handshake: round p50 against N device workers', xLabel: 'device workers (N)', yLabel: 'round p50', xs: ns, series }));
  const best = ns.map((n) => Math.min(at('ref:blocking', n), at('ref:spin', n)));
  write(
    'handshake-ratio.svg',
    lineChart({
      title: 'devmirror p50 / the better bare Atomics strategy, same run',
      xLabel: 'device workers (N)',
      yLabel: 'ratio',
      xs: ns,
      fmt: ratio,
      hlines: [{ y: 1.5, label: 'goal 1.5x' }],
      series: [
        { name: 'DMA idle', ys: ns.map((n, i) => at('devmirror (DMA idle)', n) / best[i]), color: '#2b6cb0' },
        { name: 'vs waitAsync reference', ys: ns.map((n) => at('devmirror (DMA idle)', n) / at('ref:waitAsync', n)), color: '#319795', dashed: true },
      ],
    }),
  );
}

function channel(): void {
  const d = load<{ rows: Array<{ n: number; variant: string; placement?: string; role?: string; lat: Percentiles }> }>(CHANNEL);
  if (!d) return;
  // Since 11-28 a run measures N = 1 in two placements (bench/channel.ts): the curve takes the one
  // where the client has a CPU of its own, as the processes of the larger N mostly do.
  const used = d.rows.filter((r) => r.placement !== 'together');
  const isFloor = (r: { variant: string }): boolean => /\(floor\)(, \w+)?$/.test(r.variant);
  // The protocol floor (N = 1, since 11-29) is a reference, not a point of the curve.
  const rows = used.filter((r) => !isFloor(r) && r.role !== 'protocol').sort((a, b) => a.n - b.n);
  // The floor at each N: the ws echo at N = 1, the same-layout ws fan-out above (older runs: none).
  const floorAt = (n: number): Percentiles | null => used.find((r) => isFloor(r) && r.n === n)?.lat ?? null;
  const floors = rows.map((r) => floorAt(r.n));
  if (rows.length === 0) return;
  write(
    'channel-clients.svg',
    lineChart({
      title: 'Notifier channel: round latency against N external clients',
      xLabel: `external clients (N, over at most 4 processes${d.rows.some((r) => r.placement === 'apart') ? '; N = 1 pinned, the client on its own CPU' : ''})`,
      yLabel: 'round latency',
      xs: rows.map((r) => r.n),
      hlines: [{ y: 50_000, label: 'goal: p99 < 50 ms at 1000' }],
      series: [
        { name: 'p50', ys: rows.map((r) => r.lat.p50) },
        { name: 'p99', ys: rows.map((r) => r.lat.p99) },
        ...(floors.every((f) => f !== null)
          ? [
              { name: 'bare ws fan-out p50', ys: floors.map((f) => f!.p50), dashed: true },
              { name: 'bare ws fan-out p99', ys: floors.map((f) => f!.p99), dashed: true },
            ]
          : []),
        { name: 'max', ys: rows.map((r) => r.lat.max), dashed: true },
      ],
    }),
  );
}

function kernel(): void {
  const d = load<{ invalidation: Record<string, { tree: Percentiles; linear: Percentiles; kernel: Percentiles }> }>('kernel.json');
  if (!d) return;
  const ns = Object.keys(d.invalidation)
    .map(Number)
    .sort((a, b) => a - b);
  write(
    'kernel-subscriptions.svg',
    lineChart({
      title: 'One invalidation among N interval subscriptions (p50)',
      xLabel: 'interval subscriptions (N)',
      yLabel: 'cost',
      xs: ns.map((n) => n.toLocaleString('en-US')),
      series: [
        { name: 'interval tree', ys: ns.map((n) => d.invalidation[n].tree.p50) },
        { name: 'madvise syscall, end to end', ys: ns.map((n) => d.invalidation[n].kernel.p50) },
        { name: 'linear scan (baseline)', ys: ns.map((n) => d.invalidation[n].linear.p50), dashed: true },
      ],
    }),
  );
}

function sweep(file: string, out: string, title: string, xLabel: string): void {
  const d = load<SweepReport>(file);
  if (!d) return;
  const series: Series[] = [
    { name: 'round p50', ys: d.runs.map((r) => r.round?.p50 ?? NaN) },
    { name: 'round p99', ys: d.runs.map((r) => r.round?.p99 ?? NaN) },
  ];
  if (d.runs.every((r) => r.baselines)) {
    series.push({ name: 'bare Atomics blocking p50', ys: d.runs.map((r) => r.baselines!.atomicsBlocking.p50), dashed: true });
    series.push({ name: 'postMessage p50', ys: d.runs.map((r) => r.baselines!.postMessage.p50), dashed: true });
  }
  write(out, lineChart({ title, xLabel, yLabel: 'latency', xs: d.sweep.values, series }));
}

function policies(file: string, out: string, title: string): void {
  const d = load<SweepReport>(file);
  if (!d || d.sweep.dimension !== 'policy') return;
  const per = (r: BenchReport): number => (r.ops ? r.totals.refaults / r.ops : 0);
  write(
    out,
    barChart({
      title,
      yLabel: 'refaulted pages per operation',
      categories: d.sweep.values.map(String),
      series: [{ name: 'refaulted pages per operation', ys: d.runs.map(per) }],
    }),
  );
}

handshake();
channel();
kernel();
sweep('range-sweep.json', 'range-sweep.svg', 'munmap storms (one device of each kind): round against range', 'pages per munmap (4 KiB each)');
sweep('devices-sweep.json', 'devices-sweep.svg', 'madvise of one page: round against the number of dmirror workers', 'device workers');
policies('policy-sweep.json', 'policy-mprotect.svg', 'mprotect storms (gpu + dmirror, 2 MiB ranges): refaults by policy');
policies('replay-boehm-policy.json', 'policy-replay-boehm.svg', 'Boehm GC replay (4,582 mprotects, 30% device writes): refaults by policy');
policies('replay-boehm-policy-write-mix-0.json', 'policy-replay-boehm-read-only.svg', 'Boehm GC replay (4,582 mprotects, devices only read): refaults by policy');
policies('replay-boehm-g16-w0-d0.05.json', 'policy-replay-boehm-gpu-64k.svg', 'Boehm GC replay, devices only read, 64 KiB gpu: refaults');
console.log(written.length ? `wrote:\n  ${written.join('\n  ')}` : `no data in ${DATA}`);
