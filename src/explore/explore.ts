/**
 * `devmirror explore`: runs a scenario many times under seeded schedules (alternating a delayed
 * uniform random walk and PCT), stops at the first run where an oracle fails, shrinks the scenario
 * and the schedule to a minimal reproduction, and writes it as a file that `devmirror replay` runs
 * again step for step.
 *
 * Shrinking keeps "the same finding": the same oracle on the same device (for the sanitizer, any
 * finding kind: a stale access to a freed frame is also a lost write, and which one is reported
 * first depends on what the frame did since). It tries, to a fixed point:
 *   1. removing scenario operations, one at a time (a thread whose operations are all gone goes);
 *   2. the shortest prefix of the choice list that still fails with the rest left to the default
 *      policy (oldest step first: no preemption);
 *   3. replacing each remaining preemption by the default choice.
 * Every candidate is one run with the candidate's choices forced where their keys exist.
 */
import { performance } from 'node:perf_hooks';
import { writeFileSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { DevmirrorError } from '../errors.js';
import { runScenario, type Finding, type RunResult } from './run.js';
import { Random, ScheduleDiverged, type Policy, type TakenStep } from './scheduler.js';
import { checkScenario, describeOp, scenarioToRaw, type Scenario } from './scenario.js';

export const EXPLORE_RECORD_TYPE = 'devmirror-explore';
export const EXPLORE_RECORD_VERSION = 1;

export interface Repro {
  type: typeof EXPLORE_RECORD_TYPE;
  version: number;
  /** The shrunk scenario, in file form (threads as a map). */
  scenario: Scenario | Record<string, unknown>;
  /** The seed and run the finding was first seen in. */
  seed: number;
  run: number;
  /** The keys of every step up to the finding: replay forces them strictly. */
  choices: string[];
  finding: Omit<Finding, 'graph' | 'step'> & { step: number };
  steps: TakenStep[];
  ops: string[];
  /** Before shrinking: how many operations and steps. */
  original: { ops: number; steps: number; deviations: number };
  shrinkRuns: number;
}

export interface ExploreOptions {
  runs: number;
  seed: number;
  maxSteps?: number;
  shrink?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
}

export interface ExploreResult {
  /** Runs made (up to and including the first failing one). */
  runs: number;
  /** The shrunk reproduction of the first failing run, or null. */
  repro: Repro | null;
  ms: number;
}

/** The schedule policy of run `i` of a seed: deterministic, alternating the two random walks. */
export function policyFor(seed: number, i: number): Policy {
  const rng = new Random((seed * 0x9e3779b1 + i * 0x85ebca6b) >>> 0);
  return i % 2 === 0 ? { kind: 'random', rng, horizon: 24 } : { kind: 'pct', rng, depth: 3, horizon: 48 };
}

const sameFinding = (a: Finding | null, b: Finding): boolean => a !== null && a.oracle === b.oracle && a.device === b.device;
const opCount = (sc: Scenario): number => sc.threads.reduce((n, t) => n + t.ops.length, 0);

export async function explore(sc: Scenario, o: ExploreOptions): Promise<ExploreResult> {
  const t0 = performance.now();
  const log = o.log ?? (() => undefined);
  for (let i = 0; i < o.runs; i++) {
    const r = await runScenario(sc, { policy: policyFor(o.seed, i), maxSteps: o.maxSteps });
    if ((i + 1) % 100 === 0) log(`${i + 1} runs, no finding yet`);
    if (!r.finding) continue;
    log(`run ${i}: ${r.finding.oracle} (${r.finding.kind}) on ${r.finding.device ?? 'the kernel'}: ${r.finding.message}`);
    const repro = o.shrink === false ? reproOf(sc, o.seed, i, r, r, 0) : await shrink(sc, o.seed, i, r, o.maxSteps, log);
    return { runs: i + 1, repro, ms: performance.now() - t0 };
  }
  return { runs: o.runs, repro: null, ms: performance.now() - t0 };
}

function reproOf(sc: Scenario, seed: number, run: number, first: RunResult, r: RunResult, shrinkRuns: number): Repro {
  const f = r.finding!;
  const steps = r.steps.slice(0, f.step);
  return {
    type: EXPLORE_RECORD_TYPE,
    version: EXPLORE_RECORD_VERSION,
    scenario: scenarioToRaw(sc),
    seed,
    run,
    choices: steps.map((s) => s.key),
    finding: { oracle: f.oracle, kind: f.kind, device: f.device, message: f.message, step: f.step },
    steps,
    ops: r.ops,
    original: { ops: opCount(sc), steps: first.finding!.step, deviations: first.steps.slice(0, first.finding!.step).filter((s) => s.deviation).length },
    shrinkRuns,
  };
}

async function shrink(sc0: Scenario, seed: number, run: number, first: RunResult, maxSteps: number | undefined, log: (l: string) => void): Promise<Repro> {
  const target = first.finding!;
  let sc = sc0;
  let best = first;
  let keys: (string | null)[] = first.steps.slice(0, target.step).map((s) => s.key);
  let tries = 0;
  const attempt = async (cand: Scenario, k: (string | null)[]): Promise<RunResult | null> => {
    tries++;
    const r = await runScenario(cand, { policy: { kind: 'forced', keys: k, strict: false }, maxSteps });
    return sameFinding(r.finding, target) ? r : null;
  };
  const adopt = (r: RunResult): void => {
    best = r;
    keys = r.steps.slice(0, r.finding!.step).map((s) => s.key);
  };
  // Progress is measured, not flagged: a pass that adopts a candidate of the same size (a prefix
  // that reproduces with the same number of steps) must not loop for ever.
  const size = (): number => opCount(sc) * 1_000_000 + best.finding!.step * 1000 + best.steps.slice(0, best.finding!.step).filter((x) => x.deviation).length;
  for (let before = Infinity; size() < before; ) {
    before = size();
    // 1. Fewer operations.
    for (let t = 0; t < sc.threads.length; t++) {
      for (let j = sc.threads[t].ops.length - 1; j >= 0; j--) {
        const threads = sc.threads.map((th, ti) => (ti === t ? { ...th, ops: th.ops.filter((_, oj) => oj !== j) } : th)).filter((th) => th.ops.length > 0);
        if (threads.length === 0) continue;
        const cand: Scenario = { ...sc, threads };
        const r = await attempt(cand, keys);
        if (r) {
          sc = cand;
          adopt(r);
          t = Math.min(t, sc.threads.length - 1);
        }
      }
    }
    // 2. The shortest prefix of forced choices (binary search; failing is close to monotone in it).
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const r = await attempt(sc, keys.slice(0, mid));
      if (r) {
        hi = mid;
        adopt(r);
      } else lo = mid + 1;
    }
    // 3. Fewer preemptions: the default choice wherever it still fails.
    for (let i = keys.length - 1; i >= 0; i--) {
      if (!best.steps[i]?.deviation) continue;
      const cand = keys.slice();
      cand[i] = null;
      const r = await attempt(sc, cand);
      if (r) {
        adopt(r);
        i = Math.min(i, keys.length);
      }
    }
  }
  log(`shrunk in ${tries} runs: ${opCount(sc0)} -> ${opCount(sc)} operations, ${target.step} -> ${best.finding!.step} steps`);
  return reproOf(sc, seed, run, first, best, tries);
}

// ---- reproduction files ----------------------------------------------------------------------

export function writeRepro(file: string, r: Repro): void {
  writeFileSync(file, JSON.stringify(r, null, 1) + '\n');
}

/** Whether a file is an explorer reproduction (rather than a soak record). */
export function isReproFile(file: string): boolean {
  let head: string;
  try {
    const buf = readFileSync(file);
    head = (file.endsWith('.gz') ? gunzipSync(buf) : buf).subarray(0, 200).toString('utf8');
  } catch {
    return false;
  }
  return head.includes(`"type": "${EXPLORE_RECORD_TYPE}"`) || head.includes(`"type":"${EXPLORE_RECORD_TYPE}"`);
}

export function readRepro(file: string): Repro {
  let raw: Record<string, unknown>;
  try {
    const buf = readFileSync(file);
    raw = JSON.parse((file.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new DevmirrorError('DM_ERR_VALIDATION', `${file} is not an explorer reproduction: ${(e as Error).message}`);
  }
  if (raw.type !== EXPLORE_RECORD_TYPE) throw new DevmirrorError('DM_ERR_VALIDATION', `${file} is not an explorer reproduction (type ${String(raw.type)})`);
  if (raw.version !== EXPLORE_RECORD_VERSION) throw new DevmirrorError('DM_ERR_VALIDATION', `${file} has version ${String(raw.version)}; this devmirror reads version ${EXPLORE_RECORD_VERSION}`);
  if (!Array.isArray(raw.choices) || !raw.choices.every((c) => typeof c === 'string')) throw new DevmirrorError('DM_ERR_VALIDATION', `${file}: choices must be a list of step keys`);
  return { ...(raw as unknown as Repro), scenario: checkScenario(raw.scenario) };
}

export interface ReplayOutcome {
  /** Same finding (oracle, kind, device, message) at the same step, through the same steps. */
  identical: boolean;
  finding: Finding | null;
  /** The first step whose label differs, or -1. */
  firstDifference: number;
  diverged: string | null;
}

/** The reproduction's scenario, checked (the file holds its raw form). */
export function scenarioOf(r: Repro): Scenario {
  return Array.isArray((r.scenario as Scenario).threads) ? (r.scenario as Scenario) : checkScenario(r.scenario);
}

/** Runs a reproduction again with its choices forced strictly. */
export async function replayRepro(r: Repro): Promise<ReplayOutcome> {
  let res: RunResult;
  try {
    res = await runScenario(scenarioOf(r), { policy: { kind: 'forced', keys: r.choices, strict: true } });
  } catch (e) {
    if (e instanceof ScheduleDiverged) return { identical: false, finding: null, firstDifference: e.index, diverged: e.message };
    throw e;
  }
  const f = res.finding;
  let firstDifference = -1;
  const upto = f ? res.steps.slice(0, f.step) : res.steps;
  for (let i = 0; i < Math.max(upto.length, r.steps.length); i++) {
    if (upto[i]?.label !== r.steps[i]?.label) {
      firstDifference = i;
      break;
    }
  }
  const identical = f !== null && f.oracle === r.finding.oracle && f.kind === r.finding.kind && f.device === r.finding.device && f.message === r.finding.message && f.step === r.finding.step && firstDifference === -1;
  return { identical, finding: f, firstDifference, diverged: null };
}

/** The reproduction as a readable step list. */
export function formatRepro(r: Repro): string {
  const lines: string[] = [];
  const sc = scenarioOf(r);
  lines.push(`scenario ${sc.name} (found by seed ${r.seed}, run ${r.run}; shrunk in ${r.shrinkRuns} runs from ${r.original.ops} operations / ${r.original.steps} steps)`);
  for (const t of sc.threads) lines.push(`  thread ${t.name}: ${t.ops.map(describeOp).join('; ')}`);
  lines.push('steps (* = the scheduler preempted the default order here):');
  r.steps.forEach((s, i) => lines.push(`${String(i + 1).padStart(4)} ${s.deviation ? '*' : ' '} ${s.label}`));
  lines.push(`FINDING (${r.finding.oracle}, ${r.finding.kind}) on ${r.finding.device ?? 'the kernel'}: ${r.finding.message}`);
  return lines.join('\n');
}
