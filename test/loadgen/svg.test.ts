import { describe, expect, it } from 'vitest';
import { barChart, fmtUs, histogram, lineChart } from '../../src/loadgen/svg.js';

const points = (svg: string, color: string): Array<[number, number]> => {
  const m = new RegExp(`<polyline fill="none" stroke="${color}"[^>]*points="([^"]*)"`).exec(svg);
  if (!m) throw new Error(`no polyline of ${color}`);
  return m[1].split(' ').map((p) => p.split(',').map(Number) as [number, number]);
};

describe('svg charts', () => {
  it('draws a standalone SVG line chart whose log value axis orders points by value', () => {
    const svg = lineChart({
      title: 'round <p50>',
      xLabel: 'N',
      yLabel: 'latency',
      xs: [1, 2, 4, 8],
      series: [
        { name: 'a', color: '#111111', ys: [10, 100, 1000, 10_000] },
        { name: 'b', color: '#222222', ys: [20, NaN, 40, 80], dashed: true },
      ],
      hlines: [{ y: 500, label: 'goal' }],
    });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.endsWith('</svg>')).toBe(true);
    expect(svg).toContain('round &lt;p50&gt;'); // escaped
    const a = points(svg, '#111111');
    expect(a).toHaveLength(4);
    // x grows left to right, larger values sit higher (smaller y), evenly on a log axis.
    for (let i = 1; i < a.length; i++) {
      expect(a[i][0]).toBeGreaterThan(a[i - 1][0]);
      expect(a[i][1]).toBeLessThan(a[i - 1][1]);
    }
    expect(Math.abs(a[0][1] - a[1][1] - (a[2][1] - a[3][1]))).toBeLessThan(0.2);
    // A missing value is skipped, not drawn at zero.
    expect(points(svg, '#222222')).toHaveLength(3);
    expect(svg).toContain('stroke-dasharray="6 4"');
    expect(svg).toContain('>goal<');
  });

  it('draws nothing without data', () => {
    expect(lineChart({ title: 't', xLabel: 'x', yLabel: 'y', xs: [], series: [] })).toBe('');
    expect(histogram('h', [0, 0, 0])).toBe('');
  });

  it('draws bars proportional to their values', () => {
    const svg = barChart({ title: 'refaults', yLabel: 'pages', categories: ['blind', 'aware'], series: [{ name: 'refaults', ys: [1000, 100] }] });
    const heights = [...svg.matchAll(/<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)" fill="[^"]+"><title>/g)].map((m) => Number(m[1]));
    expect(heights).toHaveLength(2);
    expect(heights[0] / heights[1]).toBeCloseTo(10, 1);
  });

  it('draws a log2 histogram of the occupied buckets only', () => {
    const svg = histogram('acks', [0, 0, 5, 10, 0, 1]);
    expect((svg.match(/<rect x=/g) ?? []).length).toBe(4); // buckets 2..5
    expect(svg).toContain('4.0 µs to 8.0 µs: 5');
  });

  it('formats microseconds in the benches vocabulary', () => {
    expect(fmtUs(0.44)).toBe('0.4 µs');
    expect(fmtUs(46.7)).toBe('47 µs');
    expect(fmtUs(1500)).toBe('1.50 ms');
    expect(fmtUs(2_500_000)).toBe('2.50 s');
    expect(fmtUs(126_250)).toBe('126 ms');
    expect(fmtUs(30_000)).toBe('30.0 ms');
  });
});
