/** `devmirror explore SCENARIO` and the explorer half of `devmirror replay FILE`. */
import { parseArgs } from 'node:util';
import { basename } from 'node:path';
import { mkdirSync } from 'node:fs';
import { DevmirrorError } from '../errors.js';
import { writeFileSync } from 'node:fs';
import { explore, formatRepro, readRepro, replayRepro, scenarioOf, writeRepro } from './explore.js';
import { runScenario } from './run.js';
import { checkScenario, loadScenario, scenarioToRaw } from './scenario.js';

export const EXPLORE_USAGE = `usage: devmirror explore SCENARIO [options]

Runs SCENARIO (YAML or JSON: mappings, devices, threads of operations; see docs/explore.md and
scenarios/explore/) many times under a deterministic scheduler that chooses the order of the
kernel's, the channel's and each device's steps from a seed. On the first failing oracle
(sanitizer, data, deadlock, livelock, crash, audit) it shrinks the scenario and the schedule,
prints the reproduction as a step list and writes it to a file for \`devmirror replay\`.

options:
  --runs N        schedules to try (default 500)
  --seed S        seed of the schedules (default 1)
  --max-steps N   steps before a run counts as a livelock (default 3000)
  --out FILE      where to write the reproduction (default reports/explore-NAME-SEED.json)
  --no-shrink     keep the first failing run as it is
  --trace FILE    also write the reproduction's trace (Chrome trace / Perfetto JSON, docs/trace.md):
                  the kernel's and each device's spans, step by step up to the finding
  --bug DEV:MODE  make device DEV buggy (ack-before-quiesce, skip-seq-retry, ignore-event:EVENT,
                  lock-across-fault for a dmirror),
                  or correct (none): the same scenario must then find nothing
exit status: 0 no finding, 1 a finding (reproduction written) or an error (a typed DM_ERR_* message)`;

const line = (s: string): void => void process.stdout.write(s + '\n');

function int(name: string, v: string | undefined, dflt: number, min: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new DevmirrorError('DM_ERR_VALIDATION', `${name} must be an integer >= ${min}`);
  return n;
}

export async function exploreMain(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string' },
      seed: { type: 'string' },
      'max-steps': { type: 'string' },
      out: { type: 'string' },
      'no-shrink': { type: 'boolean' },
      bug: { type: 'string' },
      trace: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    line(EXPLORE_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new DevmirrorError('DM_ERR_VALIDATION', `give one scenario file\n${EXPLORE_USAGE}`);
  const sc = loadScenario(positionals[0]);
  if (values.bug) {
    const m = /^([^:]+):(.+)$/.exec(values.bug);
    const d = m && sc.devices.find((x) => x.name === m[1]);
    if (!m || !d) throw new DevmirrorError('DM_ERR_VALIDATION', `--bug must be DEVICE:MODE with a device of the scenario (${sc.devices.map((x) => x.name).join(', ')})`);
    // Through the scenario checker: an unknown mode is refused there.
    Object.assign(sc, withBug(sc, m[1], m[2]));
  }
  const runs = int('--runs', values.runs, 500, 1);
  const seed = int('--seed', values.seed, 1, 0);
  const maxSteps = int('--max-steps', values['max-steps'], 3000, 10);
  line(`explore ${sc.name}: ${runs} schedules from seed ${seed}`);
  const r = await explore(sc, { runs, seed, maxSteps, shrink: !values['no-shrink'], log: (s) => line(`  ${s}`) });
  if (!r.repro) {
    line(`no finding in ${r.runs} runs (${(r.ms / 1000).toFixed(1)} s)`);
    return 0;
  }
  line(formatRepro(r.repro));
  const out = values.out ?? `reports/explore-${basename(sc.name)}-${seed}.json`;
  if (!values.out) mkdirSync('reports', { recursive: true });
  writeRepro(out, r.repro);
  if (values.trace) {
    const t = await runScenario(scenarioOf(r.repro), { policy: { kind: 'forced', keys: r.repro.choices, strict: true }, trace: true });
    writeFileSync(values.trace, JSON.stringify(t.trace ?? { traceEvents: [] }));
    line(`trace written to ${values.trace} (open it in https://ui.perfetto.dev)`);
  }
  line(`reproduction written to ${out} (devmirror replay ${out}); ${r.runs} runs, ${(r.ms / 1000).toFixed(1)} s`);
  return 1;
}

function withBug(sc: ReturnType<typeof loadScenario>, device: string, mode: string): ReturnType<typeof loadScenario> {
  const raw = scenarioToRaw(sc) as Record<string, unknown> & { devices: Array<Record<string, unknown>> };
  raw.devices = raw.devices.map((d) => (d.name === device ? { ...d, bug: mode === 'none' ? null : mode } : d));
  return checkScenario(raw);
}

/** Replays an explorer reproduction `runs` times; exit 0 when every run was identical. */
export async function replayExploreMain(file: string, runs: number): Promise<number> {
  const repro = readRepro(file);
  line(formatRepro(repro));
  let same = 0;
  for (let i = 0; i < runs; i++) {
    const o = await replayRepro(repro);
    if (o.identical) same++;
    else line(`run ${i + 1}: ${o.diverged ?? `differs at step ${o.firstDifference + 1}; finding ${o.finding ? `${o.finding.oracle} ${o.finding.kind}: ${o.finding.message}` : 'none'}`}`);
  }
  line(`replayed ${runs} times: ${same} identical (same steps, same finding at step ${repro.finding.step})`);
  return same === runs ? 0 : 1;
}
