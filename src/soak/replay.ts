/**
 * `devmirror replay FILE`: runs a recorded soak again, operation for operation and fault for fault,
 * from the same seed (the same kernel boot id, the same checkpoints), and reports whether, and in
 * how many runs, the recorded problems come back. What the record cannot fix is the timing of the
 * devices' DMA and of the threads and processes around the kernel: a race the soak found may need
 * several runs to show again, hence the count.
 */
import { readRecord } from './record.js';
import { runSoak, type SoakOptions, type SoakReport } from './soak.js';

export interface ReplayReport {
  file: string;
  seed: number;
  operations: number;
  /** The recorded run's problems, by category. */
  recorded: Record<string, number>;
  runs: Array<{ ok: boolean; problemsByCategory: Record<string, number>; firstProblem: string | null; durationMs: number }>;
  /** Runs in which at least one recorded category appeared again (recorded run with problems),
   * or that were clean too (recorded run without). */
  reproduced: number;
}

export async function replaySoak(file: string, runs: number, progress?: (line: string) => void): Promise<ReplayReport> {
  const rec = readRecord(file);
  const recorded: Record<string, number> = {};
  for (const p of rec.problems) recorded[p.category] = (recorded[p.category] ?? 0) + 1;
  const options = rec.header.options as Partial<SoakOptions>;
  const out: ReplayReport = { file, seed: rec.header.seed, operations: rec.ops.length, recorded, runs: [], reproduced: 0 };
  for (let n = 0; n < runs; n++) {
    progress?.(`replay ${n + 1}/${runs}: ${rec.ops.length} operations, seed ${rec.header.seed}`);
    const r: SoakReport = await runSoak({
      ...options,
      seed: rec.header.seed,
      record: null,
      script: { ops: rec.ops, checkAt: rec.checks.map((c) => c.i) },
      progress,
    });
    const first = r.problems[0];
    out.runs.push({ ok: r.ok, problemsByCategory: r.problemsByCategory, firstProblem: first ? `[${first.category}] at operation ${first.op}: ${first.detail}` : null, durationMs: r.durationMs });
    const cats = Object.keys(recorded);
    const again = cats.length === 0 ? r.ok : cats.some((c) => (r.problemsByCategory[c] ?? 0) > 0);
    if (again) out.reproduced++;
  }
  return out;
}
