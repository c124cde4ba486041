/**
 * A self-contained HTML report (inline SVG, no script, no server): the run's configuration and
 * totals, latency histograms of the full round per event and of each device kind's acknowledgement,
 * baselines as ratios, and, for a sweep, the scaling curves (p50 and p99 against the swept value).
 */
import type { BenchReport } from './runner.js';
import type { SweepReport } from './sweep.js';

const esc = (s: unknown): string => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const fmt = (us: number): string => (!Number.isFinite(us) ? '-' : us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`);

/** Log2 histogram of microsecond samples as an SVG bar chart. */
function histogram(title: string, buckets: number[]): string {
  const w = 360;
  const h = 90;
  const max = Math.max(1, ...buckets);
  const first = buckets.findIndex((b) => b > 0);
  const last = buckets.length - 1 - [...buckets].reverse().findIndex((b) => b > 0);
  if (first < 0) return '';
  const shown = buckets.slice(first, last + 1);
  const bw = Math.max(4, Math.floor((w - 40) / shown.length));
  const bars = shown
    .map((b, i) => {
      const bh = Math.round(((h - 30) * b) / max);
      return `<rect x="${30 + i * bw}" y="${h - 20 - bh}" width="${bw - 1}" height="${bh}" fill="#5b8bd0"><title>${2 ** (first + i)}–${2 ** (first + i + 1)} µs: ${b}</title></rect>`;
    })
    .join('');
  const labels = shown.map((_, i) => (i % 3 === 0 ? `<text x="${30 + i * bw}" y="${h - 6}" font-size="9">${fmt(2 ** (first + i))}</text>` : '')).join('');
  return `<figure><svg width="${w}" height="${h}" role="img" aria-label="${esc(title)}">${bars}${labels}<text x="30" y="10" font-size="11">${esc(title)}</text></svg></figure>`;
}

function curve(title: string, xs: Array<number | string>, series: Array<{ name: string; color: string; ys: number[] }>): string {
  const w = 520;
  const h = 260;
  const left = 60;
  const bottom = 30;
  const all = series.flatMap((s) => s.ys).filter((v) => v > 0);
  if (all.length === 0 || xs.length === 0) return '';
  const lo = Math.log10(Math.min(...all));
  const hi = Math.log10(Math.max(...all)) + 1e-9;
  const x = (i: number): number => left + (xs.length === 1 ? 0 : (i * (w - left - 20)) / (xs.length - 1));
  const y = (v: number): number => h - bottom - ((Math.log10(Math.max(v, 1e-9)) - lo) / Math.max(hi - lo, 1e-9)) * (h - bottom - 20);
  const lines = series
    .map((s) => `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.ys.map((v, i) => `${x(i)},${y(v)}`).join(' ')}"/>` + s.ys.map((v, i) => `<circle cx="${x(i)}" cy="${y(v)}" r="3" fill="${s.color}"><title>${s.name} at ${xs[i]}: ${fmt(v)}</title></circle>`).join(''))
    .join('');
  const xl = xs.map((v, i) => `<text x="${x(i) - 6}" y="${h - 10}" font-size="10">${v}</text>`).join('');
  const yl = [lo, (lo + hi) / 2, hi].map((e) => `<text x="2" y="${y(10 ** e) + 4}" font-size="10">${fmt(10 ** e)}</text>`).join('');
  const legend = series.map((s, i) => `<text x="${left + i * 90}" y="12" font-size="11" fill="${s.color}">${esc(s.name)}</text>`).join('');
  return `<figure><figcaption>${esc(title)}</figcaption><svg width="${w}" height="${h}" role="img" aria-label="${esc(title)}">${legend}${lines}${xl}${yl}</svg></figure>`;
}

function runSection(r: BenchReport): string {
  const rows = r.byEventAndKind
    .map((x) => `<tr><td>${esc(x.event)}</td><td>${esc(x.deviceKind)}</td><td>${x.invalidations}</td><td>${fmt(x.round.p50)}</td><td>${fmt(x.round.p99)}</td><td>${fmt(x.ack.p50)}</td><td>${fmt(x.ack.p90)}</td><td>${fmt(x.ack.p99)}</td><td>${fmt(x.ack.p99_9)}</td><td>${fmt(x.ack.max)}</td></tr>`)
    .join('');
  const hists = r.events.map((e) => histogram(`${e.event}: full round`, r.histograms?.[`round|${e.event}`] ?? [])).join('') +
    r.byEventAndKind.map((x) => histogram(`${x.event} ack: ${x.deviceKind}`, r.histograms?.[`ack|${x.event}|${x.deviceKind}`] ?? [])).join('');
  const b = r.baselines;
  const all = r.round;
  const base = b
    ? `<h3>Baselines (same run, ${b.workers} workers)</h3><table><tr><th></th><th>p50</th><th>p99</th><th>devmirror p50 / this</th></tr>` +
      [
        ['bare Atomics, blocking', b.atomicsBlocking],
        ['bare Atomics, spin then park', b.atomicsSpin],
        ['bare Atomics, publisher in waitAsync', b.atomicsWaitAsync],
        ['postMessage handshake', b.postMessage],
        ...(b.wsEcho ? [['ws echo of 48 bytes (external clients\' floor)', b.wsEcho]] : []),
      ]
        .map(([n, p]) => `<tr><td>${n}</td><td>${fmt((p as { p50: number }).p50)}</td><td>${fmt((p as { p99: number }).p99)}</td><td>${all ? (all.p50 / (p as { p50: number }).p50).toFixed(2) : '-'}</td></tr>`)
        .join('') +
      '</table>'
    : '';
  return `<p>${r.ops} operations in ${(r.durationMs / 1000).toFixed(1)} s; ${r.invalidations} invalidations (${r.invalidationsPerSec}/s); device faults ${r.totals.deviceFaults}, refaults ${r.totals.refaults}; sanitizer ${r.totals.checked} accesses checked, <b>${r.totals.findings} findings</b>; evictions ${r.totals.evictions}.</p>
<table><tr><th>event</th><th>device kind</th><th>invalidations</th><th>round p50</th><th>round p99</th><th>ack p50</th><th>ack p90</th><th>ack p99</th><th>ack p99_9</th><th>ack max</th></tr>${rows}</table>
${base}<div class="hists">${hists}</div>`;
}

export function renderHtml(r: BenchReport | SweepReport): string {
  const body =
    'sweep' in r
      ? `<h2>Sweep of ${esc(r.sweep.dimension)} = ${r.sweep.values.join(', ')}</h2>` +
        curve(
          `full round latency against ${r.sweep.dimension}`,
          r.sweep.values,
          [
            { name: 'p50', color: '#2b6cb0', ys: r.runs.map((x) => x.round?.p50 ?? 0) },
            { name: 'p99', color: '#c05621', ys: r.runs.map((x) => x.round?.p99 ?? 0) },
          ],
        ) +
        r.runs.map((x, i) => `<h3>${esc(r.sweep.dimension)} = ${r.sweep.values[i]}</h3>${runSection(x)}`).join('')
      : runSection(r);
  const machine = 'sweep' in r ? r.runs[0]?.machine : r.machine;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>devmirror bench report</title>
<style>body{font:13px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.hists{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}pre{background:#f6f6f6;padding:.5em}</style></head><body>
<h1>devmirror bench</h1><pre>${esc(JSON.stringify({ machine, options: 'sweep' in r ? r.base : r.options }, null, 2))}</pre>${body}</body></html>\n`;
}
