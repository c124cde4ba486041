/**
 * A self-contained HTML report (inline SVG, no script, no server): the run's configuration and
 * totals, latency histograms of the full round per event and of each device kind's acknowledgement,
 * baselines as ratios, a replay's address spaces, and, for a sweep, the scaling curves (p50 and p99
 * against the swept value).
 */
import type { BenchReport } from './runner.js';
import type { SweepReport } from './sweep.js';
import { esc, fmtUs as fmt, histogram as svgHistogram, lineChart } from './svg.js';

const histogram = (title: string, buckets: number[]): string => {
  const svg = svgHistogram(title, buckets);
  return svg ? `<figure>${svg}</figure>` : '';
};

/** What a replay replayed, and its address spaces (the devices' one marked). */
function replaySection(rp: NonNullable<BenchReport['replay']>): string {
  const refused = Object.entries(rp.refused);
  const spaces = rp.spaces
    .map(
      (s) =>
        `<tr><td>${s.index}${s.target ? ' (devices)' : ''}</td><td>${s.pids.length}</td><td>${esc(s.pids.slice(0, 4).join(', '))}${s.pids.length > 4 ? ', ...' : ''}</td><td>${s.memoryCalls}</td><td>${s.ended ?? 'lives'}${s.exited ? ' (exited)' : ''}</td></tr>`,
    )
    .join('');
  return `<h3>Replay of ${esc(rp.file)}</h3><p>${rp.replayed} of ${rp.calls} calls replayed from ${rp.tasks} tasks in ${rp.spaces.length} address spaces; ${rp.mappings} mappings, ${rp.imageMappings} image mappings (execve's, mapped when a call needed them), ${rp.touchedPages} pages touched; refused: ${
    refused.length === 0 ? 'none' : esc(refused.map(([k, n]) => `${k} ${n}`).join(', '))
  }.</p><table><tr><th>address space</th><th>tasks</th><th>pids</th><th>memory calls</th><th>ended</th></tr>${spaces}</table>`;
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
        ...(b.wsFanout ? [[`ws fan-out of 48 bytes to ${b.wsFanout.clients} connections (same processes)`, b.wsFanout.lat]] : []),
      ]
        .map(([n, p]) => `<tr><td>${n}</td><td>${fmt((p as { p50: number }).p50)}</td><td>${fmt((p as { p99: number }).p99)}</td><td>${all ? (all.p50 / (p as { p50: number }).p50).toFixed(2) : '-'}</td></tr>`)
        .join('') +
      '</table>'
    : '';
  return `<p>${r.ops} operations in ${(r.durationMs / 1000).toFixed(1)} s; ${r.invalidations} invalidations (${r.invalidationsPerSec}/s); device faults ${r.totals.deviceFaults}, refaults ${r.totals.refaults} pages in ${r.totals.refaultFaults ?? 0} faults; sanitizer ${r.totals.checked} accesses checked, <b>${r.totals.findings} findings</b>; evictions ${r.totals.evictions}.</p>
<table><tr><th>event</th><th>device kind</th><th>invalidations</th><th>round p50</th><th>round p99</th><th>ack p50</th><th>ack p90</th><th>ack p99</th><th>ack p99_9</th><th>ack max</th></tr>${rows}</table>
${r.replay ? replaySection(r.replay) : ''}${base}<div class="hists">${hists}</div>`;
}

export function renderHtml(r: BenchReport | SweepReport): string {
  const body =
    'sweep' in r
      ? `<h2>Sweep of ${esc(r.sweep.dimension)} = ${r.sweep.values.join(', ')}</h2>` +
        `<figure>${lineChart({
          title: `full round latency against ${r.sweep.dimension}`,
          xLabel: r.sweep.dimension,
          yLabel: 'round latency',
          xs: r.sweep.values,
          series: [
            { name: 'p50', ys: r.runs.map((x) => x.round?.p50 ?? NaN) },
            { name: 'p99', ys: r.runs.map((x) => x.round?.p99 ?? NaN) },
            ...(r.runs.every((x) => x.baselines)
              ? [{ name: 'bare Atomics blocking p50 (same run)', dashed: true, ys: r.runs.map((x) => x.baselines!.atomicsBlocking.p50) }]
              : []),
          ],
        })}</figure>` +
        r.runs.map((x, i) => `<h3>${esc(r.sweep.dimension)} = ${r.sweep.values[i]}</h3>${runSection(x)}`).join('')
      : runSection(r);
  const machine = 'sweep' in r ? r.runs[0]?.machine : r.machine;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>devmirror bench report</title>
<style>body{font:13px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
.hists{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}pre{background:#f6f6f6;padding:.5em}</style></head><body>
<h1>devmirror bench</h1><pre>${esc(JSON.stringify({ machine, options: 'sweep' in r ? r.base : r.options }, null, 2))}</pre>${body}</body></html>\n`;
}
