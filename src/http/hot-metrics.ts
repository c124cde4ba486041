/**
 * A labelled counter and histogram for the kernel thread's hot path, registered in prom-client's
 * registry as ordinary metrics (same exposition, same names and labels as prom-client's own).
 *
 * prom-client hashes the label object and validates it on every labelled inc/observe; every
 * invalidation updates four series, and each subscriber's acknowledgement one more, on the thread
 * that runs the kernel. Here a series is found by a key the caller derives from the label values
 * (a number where it can: a string built per call cost a concatenation and a hash, 11-28), its
 * label object is made once, by a function of up to two label values that the caller defines once
 * (a closure made per call was an allocation per call), and an observation is a bucket search and
 * three adds.
 */

/** A series' key: a number (cheapest to find) or a string. */
export type SeriesKey = number | string;
/** Makes a series' label object from up to two label values; called once per series. */
export type LabelMaker = (a: string, b: string) => Record<string, string>;

interface CounterSeries {
  labels: Record<string, string>;
  value: number;
}

interface HistogramSeries {
  labels: Record<string, string>;
  /** Observations per bucket (not cumulative); above the last bound only `count` grows. */
  counts: Float64Array;
  sum: number;
  count: number;
}

type Exposed = { name: string; help: string; type: string; aggregator: string; values: Array<{ labels: Record<string, string | number>; value: number; metricName?: string }> };

export class HotCounter {
  readonly aggregator = 'sum';
  private readonly series = new Map<SeriesKey, CounterSeries>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  /** Adds 1 to the series `key`; `labels(a, b)` is called only the first time the key is seen. */
  inc(key: SeriesKey, labels: LabelMaker, a = '', b = ''): void {
    let s = this.series.get(key);
    if (s === undefined) this.series.set(key, (s = { labels: labels(a, b), value: 0 }));
    s.value++;
  }

  get(): Exposed {
    return { name: this.name, help: this.help, type: 'counter', aggregator: this.aggregator, values: [...this.series.values()].map((s) => ({ labels: s.labels, value: s.value })) };
  }

  reset(): void {
    this.series.clear();
  }
}

export class HotHistogram {
  readonly aggregator = 'sum';
  private readonly series = new Map<SeriesKey, HistogramSeries>();
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
  ) {}

  /** Records `v` in the series `key`; `labels(a, b)` is called only the first time the key is seen. */
  observe(key: SeriesKey, v: number, labels: LabelMaker, a = '', b = ''): void {
    let s = this.series.get(key);
    if (s === undefined) this.series.set(key, (s = { labels: labels(a, b), counts: new Float64Array(this.buckets.length), sum: 0, count: 0 }));
    const bounds = this.buckets;
    for (let i = 0; i < bounds.length; i++) {
      if (v <= bounds[i]) {
        s.counts[i]++;
        break;
      }
    }
    s.sum += v;
    s.count++;
  }

  get(): Exposed {
    const values: Exposed['values'] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        cumulative += s.counts[i];
        values.push({ labels: { le: this.buckets[i], ...s.labels }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: 'histogram', aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}
