/**
 * Sweeps: the same bench once per value of one dimension, for one curve each.
 *   devices=1,2,4,...          total device workers, spread round robin over the configured kinds
 *   range=1,16,512             pages per operation
 *   policy=blind,faithful,aware  the event policy of every device (refaults and work compared)
 *   clients=1,10,100,1000      external clients over at most four processes
 */
import { DevmirrorError } from '../errors.js';
import type { DeviceKind } from '../devices/protocol.js';
import { runBench, type BenchOptions, type BenchReport, type Progress } from './runner.js';

export const SWEEP_DIMENSIONS = ['devices', 'range', 'policy', 'clients'] as const;
export type SweepDimension = (typeof SWEEP_DIMENSIONS)[number];

export interface SweepReport {
  sweep: { dimension: SweepDimension; values: Array<number | string> };
  base: BenchOptions;
  runs: BenchReport[];
}

export function parseSweep(spec: string): { dimension: SweepDimension; values: Array<number | string> } {
  const pol = /^policy=([a-z,]+)$/.exec(spec);
  if (pol) {
    const values = pol[1].split(',').filter(Boolean);
    if (values.length === 0 || values.some((v) => !['faithful', 'aware', 'blind'].includes(v))) throw new DevmirrorError('DM_ERR_VALIDATION', '--sweep policy= takes faithful, aware, blind');
    return { dimension: 'policy', values };
  }
  const m = /^(\w+)=([\d,]+)$/.exec(spec);
  if (!m) throw new DevmirrorError('DM_ERR_VALIDATION', `--sweep "${spec}": expected dimension=v1,v2,... (dimensions: ${SWEEP_DIMENSIONS.join(', ')})`);
  if (!SWEEP_DIMENSIONS.includes(m[1] as SweepDimension)) {
    throw new DevmirrorError('DM_ERR_VALIDATION', `--sweep: unknown dimension ${m[1]} (dimensions: ${SWEEP_DIMENSIONS.join(', ')})`);
  }
  const values = m[2].split(',').filter(Boolean).map(Number);
  if (values.length === 0 || values.some((v) => !Number.isInteger(v) || v < 1)) throw new DevmirrorError('DM_ERR_VALIDATION', '--sweep values must be positive integers');
  return { dimension: m[1] as SweepDimension, values };
}

/** `total` devices spread round robin over the kinds the base configures (all four by default). */
function spread(base: BenchOptions, total: number): Partial<Record<DeviceKind, number>> {
  const kinds = (Object.keys(base.devices) as DeviceKind[]).filter((k) => (base.devices[k] ?? 0) > 0);
  const use = kinds.length ? kinds : (['gpu', 'rdma', 'kvm', 'dmirror'] as DeviceKind[]);
  const out: Partial<Record<DeviceKind, number>> = {};
  for (let i = 0; i < total; i++) out[use[i % use.length]] = (out[use[i % use.length]] ?? 0) + 1;
  return out;
}

export async function runSweep(
  base: BenchOptions,
  dimension: SweepDimension,
  values: Array<number | string>,
  progress?: (value: number | string) => Progress,
  each?: (r: BenchReport, value: number | string) => Promise<void>,
): Promise<SweepReport> {
  const runs: BenchReport[] = [];
  for (const v of values) {
    const o: BenchOptions =
      dimension === 'devices'
        ? { ...base, devices: spread(base, Number(v)) }
        : dimension === 'range'
          ? { ...base, rangePages: Number(v) }
          : dimension === 'clients'
            ? { ...base, clients: Number(v) }
            : { ...base, policy: v as BenchOptions['policy'] };
    const r = await runBench(o, progress?.(v));
    if (each) await each(r, v);
    runs.push(r);
  }
  return { sweep: { dimension, values }, base, runs };
}
