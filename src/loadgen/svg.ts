/**
 * Charts as standalone SVG (no script, no fonts to fetch): the same drawings go inline into the
 * HTML report (report-html.ts) and into files under docs/charts (bench/charts.ts), so a chart in
 * the docs and one in a user's report read the same way.
 *
 * Latencies are microseconds; value axes are logarithmic by default, because the figures compared
 * (a bare Atomics round and a 64-device round, say) differ by orders of magnitude.
 */

export const esc = (s: unknown): string => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** Microseconds, humanised (the unit every bench prints). */
export const fmtUs = (us: number): string => {
  if (!Number.isFinite(us)) return '-';
  // Three significant digits at most, as the benches print them.
  const three = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  if (us >= 1e6) return `${three(us / 1e6)} s`;
  if (us >= 1000) return `${three(us / 1000)} ms`;
  return `${us >= 10 ? us.toFixed(0) : us.toFixed(1)} µs`;
};

/** A palette that stays distinguishable in grey print too. */
export const COLORS = ['#2b6cb0', '#c05621', '#2f855a', '#6b46c1', '#b7791f', '#c53030', '#319795', '#4a5568'];

export interface Series {
  name: string;
  ys: number[];
  color?: string;
  /** Dashed: references and goals, as opposed to measured devmirror figures. */
  dashed?: boolean;
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  xs: Array<number | string>;
  series: Series[];
  /** Logarithmic value axis (default true). */
  logY?: boolean;
  /** How to print a value (default fmtUs). */
  fmt?: (v: number) => string;
  /** Horizontal reference lines (a goal, a floor). */
  hlines?: Array<{ y: number; label: string }>;
  width?: number;
  height?: number;
}

const svgOpen = (w: number, h: number, title: string): string =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="system-ui,sans-serif" role="img" aria-label="${esc(title)}">` +
  `<rect width="${w}" height="${h}" fill="#fff"/><title>${esc(title)}</title>`;

/** Decade (or evenly spaced) ticks across [lo, hi]. */
function ticks(lo: number, hi: number, log: boolean): number[] {
  if (log) {
    const out: number[] = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 3]) {
        const v = m * 10 ** e;
        if (v >= lo / 1.0001 && v <= hi * 1.0001) out.push(v);
      }
    }
    return out.length >= 2 ? out : [lo, hi];
  }
  const step = 10 ** Math.floor(Math.log10(Math.max(hi - lo, 1e-9) / 4));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= 6) ?? step * 10;
  const out: number[] = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(v);
  return out;
}

/** Lines over categorical x positions (N = 1, 2, 4, ... is evenly spaced, as a log2 axis would be). */
export function lineChart(c: LineChart): string {
  const w = c.width ?? 720;
  const h = c.height ?? 360;
  const left = 70;
  const right = 20;
  const legendRows = Math.ceil(c.series.length / 3);
  const top = 36 + legendRows * 15;
  const bottom = 48;
  const logY = c.logY ?? true;
  const fmt = c.fmt ?? fmtUs;
  const values = [...c.series.flatMap((s) => s.ys), ...(c.hlines ?? []).map((l) => l.y)].filter((v) => Number.isFinite(v) && (!logY || v > 0));
  if (values.length === 0 || c.xs.length === 0) return '';
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (logY) {
    // Half-decade bounds: a little room above and below the extreme points.
    lo = 10 ** (Math.floor(Math.log10(lo) * 2) / 2);
    hi = 10 ** (Math.ceil(Math.log10(hi) * 2) / 2);
  } else {
    lo = Math.min(0, lo);
    hi = hi * 1.1 || 1;
  }
  const fy = (v: number): number => {
    const t = logY ? (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo) || 1) : (v - lo) / (hi - lo || 1);
    return top + (1 - t) * (h - top - bottom);
  };
  const fx = (i: number): number => left + (c.xs.length === 1 ? (w - left - right) / 2 : (i * (w - left - right)) / (c.xs.length - 1));
  const grid = ticks(lo, hi, logY)
    .map((v) => `<line x1="${left}" x2="${w - right}" y1="${fy(v)}" y2="${fy(v)}" stroke="#e2e8f0"/><text x="${left - 6}" y="${fy(v) + 4}" font-size="11" text-anchor="end" fill="#4a5568">${esc(fmt(v))}</text>`)
    .join('');
  const xl = c.xs.map((v, i) => `<text x="${fx(i)}" y="${h - bottom + 16}" font-size="11" text-anchor="middle" fill="#4a5568">${esc(v)}</text>`).join('');
  const hl = (c.hlines ?? [])
    .map((l) => `<line x1="${left}" x2="${w - right}" y1="${fy(l.y)}" y2="${fy(l.y)}" stroke="#c53030" stroke-dasharray="2 3"/><text x="${w - right - 4}" y="${fy(l.y) - 4}" font-size="11" text-anchor="end" fill="#c53030">${esc(l.label)}</text>`)
    .join('');
  const lines = c.series
    .map((s, si) => {
      const color = s.color ?? COLORS[si % COLORS.length];
      const pts = s.ys.map((v, i) => [i, v] as const).filter(([, v]) => Number.isFinite(v) && (!logY || v > 0));
      return (
        `<polyline fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''} points="${pts.map(([i, v]) => `${fx(i).toFixed(1)},${fy(v).toFixed(1)}`).join(' ')}"/>` +
        pts.map(([i, v]) => `<circle cx="${fx(i).toFixed(1)}" cy="${fy(v).toFixed(1)}" r="3" fill="${color}"><title>${esc(s.name)} at ${esc(c.xs[i])}: ${esc(fmt(v))}</title></circle>`).join('')
      );
    })
    .join('');
  const legend = c.series
    .map((s, si) => {
      const color = s.color ?? COLORS[si % COLORS.length];
      const col = si % 3;
      const row = Math.floor(si / 3);
      const x = left + col * ((w - left - right) / 3);
      const y = 34 + row * 15;
      return `<line x1="${x}" x2="${x + 18}" y1="${y - 4}" y2="${y - 4}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/><text x="${x + 22}" y="${y}" font-size="11">${esc(s.name)}</text>`;
    })
    .join('');
  return (
    svgOpen(w, h, c.title) +
    `<text x="${left}" y="14" font-size="13" font-weight="600">${esc(c.title)}</text>` +
    grid +
    hl +
    `<line x1="${left}" x2="${left}" y1="${top}" y2="${h - bottom}" stroke="#a0aec0"/><line x1="${left}" x2="${w - right}" y1="${h - bottom}" y2="${h - bottom}" stroke="#a0aec0"/>` +
    xl +
    `<text x="${(left + w - right) / 2}" y="${h - 10}" font-size="12" text-anchor="middle">${esc(c.xLabel)}</text>` +
    `<text x="14" y="${(top + h - bottom) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 ${(top + h - bottom) / 2})">${esc(c.yLabel)}</text>` +
    lines +
    legend +
    '</svg>'
  );
}

export interface BarChart {
  title: string;
  yLabel: string;
  /** One group per category; one bar per series within it. */
  categories: string[];
  series: Series[];
  fmt?: (v: number) => string;
  width?: number;
  height?: number;
}

/** Grouped bars on a linear axis from zero, each bar labelled with its value. */
export function barChart(c: BarChart): string {
  const w = c.width ?? 640;
  const h = c.height ?? 300;
  const left = 70;
  const right = 20;
  const top = 46;
  const bottom = 40;
  const fmt = c.fmt ?? ((v: number) => v.toLocaleString('en-US', { maximumFractionDigits: 1 }));
  const max = Math.max(1e-9, ...c.series.flatMap((s) => s.ys).filter(Number.isFinite)) * 1.12;
  const fy = (v: number): number => top + (1 - v / max) * (h - top - bottom);
  const groupW = (w - left - right) / Math.max(1, c.categories.length);
  const barW = Math.min(48, (groupW * 0.8) / Math.max(1, c.series.length));
  const grid = ticks(0, max, false)
    .map((v) => `<line x1="${left}" x2="${w - right}" y1="${fy(v)}" y2="${fy(v)}" stroke="#e2e8f0"/><text x="${left - 6}" y="${fy(v) + 4}" font-size="11" text-anchor="end" fill="#4a5568">${esc(fmt(v))}</text>`)
    .join('');
  const bars = c.categories
    .map((cat, ci) => {
      const gx = left + ci * groupW + (groupW - barW * c.series.length) / 2;
      return (
        c.series
          .map((s, si) => {
            const v = s.ys[ci];
            if (!Number.isFinite(v)) return '';
            const color = s.color ?? COLORS[si % COLORS.length];
            const x = gx + si * barW;
            return `<rect x="${x.toFixed(1)}" y="${fy(v).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(h - bottom - fy(v)).toFixed(1)}" fill="${color}"><title>${esc(s.name)}, ${esc(cat)}: ${esc(fmt(v))}</title></rect><text x="${(x + barW / 2 - 1).toFixed(1)}" y="${(fy(v) - 4).toFixed(1)}" font-size="10" text-anchor="middle">${esc(fmt(v))}</text>`;
          })
          .join('') + `<text x="${(left + ci * groupW + groupW / 2).toFixed(1)}" y="${h - bottom + 16}" font-size="11" text-anchor="middle">${esc(cat)}</text>`
      );
    })
    .join('');
  const legend = c.series
    .map((s, si) => `<rect x="${left + si * 150}" y="24" width="12" height="10" fill="${s.color ?? COLORS[si % COLORS.length]}"/><text x="${left + si * 150 + 16}" y="33" font-size="11">${esc(s.name)}</text>`)
    .join('');
  return (
    svgOpen(w, h, c.title) +
    `<text x="${left}" y="14" font-size="13" font-weight="600">${esc(c.title)}</text>` +
    grid +
    `<line x1="${left}" x2="${w - right}" y1="${h - bottom}" y2="${h - bottom}" stroke="#a0aec0"/>` +
    bars +
    `<text x="14" y="${(top + h - bottom) / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 ${(top + h - bottom) / 2})">${esc(c.yLabel)}</text>` +
    legend +
    '</svg>'
  );
}

/** Log2 histogram of microsecond samples (bucket i counts samples in [2^i, 2^(i+1)) µs). */
export function histogram(title: string, buckets: number[], width = 360, height = 100): string {
  const max = Math.max(1, ...buckets);
  const first = buckets.findIndex((b) => b > 0);
  if (first < 0) return '';
  const last = buckets.length - 1 - [...buckets].reverse().findIndex((b) => b > 0);
  const shown = buckets.slice(first, last + 1);
  const bw = Math.max(4, Math.floor((width - 40) / shown.length));
  const bars = shown
    .map((b, i) => {
      const bh = Math.round(((height - 34) * b) / max);
      return `<rect x="${30 + i * bw}" y="${height - 20 - bh}" width="${bw - 1}" height="${bh}" fill="#5b8bd0"><title>${esc(fmtUs(2 ** (first + i)))} to ${esc(fmtUs(2 ** (first + i + 1)))}: ${b}</title></rect>`;
    })
    .join('');
  const labels = shown.map((_, i) => (i % 3 === 0 ? `<text x="${30 + i * bw}" y="${height - 6}" font-size="9">${esc(fmtUs(2 ** (first + i)))}</text>` : '')).join('');
  return svgOpen(width, height, title) + `<text x="30" y="11" font-size="11">${esc(title)}</text>${bars}${labels}</svg>`;
}
