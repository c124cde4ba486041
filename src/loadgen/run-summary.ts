/**
 * The verdict of several separate runs of a benchmark (bench:channel --runs).
 *
 * Why separate processes: one run's ratio depends on state that only a new process draws again:
 * which code V8 optimized, and how, in the server and in each client process (compilation runs
 * concurrently, so its timing and the type feedback it sees differ from run to run; of ten client
 * processes profiled on 11-29, one ran ws's Sender.send with a runtime call per frame that the
 * others did not make), and where things landed in memory. Blocks within one run agree closely
 * while separate runs of the same build differed by up to 0.25x in the N = 1 ratio (Xeon host,
 * 11-29). A verdict from one run is a draw; the median of several is a measure.
 */
import { spread, type Percentiles, type Spread } from '../lib/stats.js';

/** One row of a run's report, as bench:channel writes it to its JSON. */
export interface RunRow {
  n: number;
  placement: string;
  role: 'floor' | 'protocol' | 'devmirror';
  lat: Percentiles;
}

/** One configuration (N and placement) over every run that measured it, in run order. */
export interface RunSeries {
  n: number;
  placement: string;
  /** The system's p50 over its floor's, run by run. */
  p50Ratio: number[];
  /** The system's p99 (microseconds), run by run. */
  p99: number[];
  /** The floor's p99 (microseconds), run by run. */
  floorP99: number[];
  /** The protocol floor's p50 over the floor's, and the system's over the protocol floor's (where a run has one). */
  protocolRatio: number[];
  codeRatio: number[];
  /** The spread of p50Ratio; `above` counts the runs over `limit`. */
  ratio: Spread;
}

/**
 * Pairs every system row of every run with the floor (and protocol floor) row of the same N and
 * placement in that run, and groups the ratios by configuration. A run without a floor row for a
 * configuration is an error: its ratio is undefined, and leaving the run out would bias the median.
 */
export function summarizeRuns(runs: ReadonlyArray<ReadonlyArray<RunRow>>, limit: number): RunSeries[] {
  const out = new Map<string, Omit<RunSeries, 'ratio'>>();
  runs.forEach((rows, run) => {
    for (const sys of rows) {
      if (sys.role !== 'devmirror') continue;
      const same = (r: RunRow): boolean => r.n === sys.n && r.placement === sys.placement;
      const floor = rows.find((r) => r.role === 'floor' && same(r));
      if (!floor) throw new Error(`run ${run + 1}: no floor row for N = ${sys.n} (${sys.placement})`);
      const proto = rows.find((r) => r.role === 'protocol' && same(r));
      const key = `${sys.n} ${sys.placement}`;
      let s = out.get(key);
      if (!s) {
        s = { n: sys.n, placement: sys.placement, p50Ratio: [], p99: [], floorP99: [], protocolRatio: [], codeRatio: [] };
        out.set(key, s);
      }
      s.p50Ratio.push(sys.lat.p50 / floor.lat.p50);
      s.p99.push(sys.lat.p99);
      s.floorP99.push(floor.lat.p99);
      if (proto) {
        s.protocolRatio.push(proto.lat.p50 / floor.lat.p50);
        s.codeRatio.push(sys.lat.p50 / proto.lat.p50);
      }
    }
  });
  return [...out.values()].map((s) => ({ ...s, ratio: spread(s.p50Ratio, limit) }));
}
