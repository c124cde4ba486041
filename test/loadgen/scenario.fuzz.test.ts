/**
 * Fuzzing the bench scenario loader (issue #8), property-based with fast-check: `devmirror bench
 * --scenario FILE` (parseBenchArgs reads the JSON or YAML file, validateBench checks the options
 * before any system starts). Inputs: random JSON and YAML documents, objects of the scenario keys
 * with random values, text-level and value-level mutations of the real scenarios
 * (bench/scenarios/*.json, *.yaml), and YAML specifics (anchors, aliases, tags, several documents).
 *
 * Either the scenario loads and validates, and then every option has the type and range
 * BenchOptions promises (a run must not start from a scenario it will choke on), or loading throws
 * the documented error: DM_ERR_VALIDATION (docs/benchmarks.md: "an unknown key is refused").
 *
 * fast-check chooses the seed; a failure prints the seed, the path and the shrunk document.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import YAML from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { parseBenchArgs, type BenchCli } from '../../src/loadgen/cli.js';
import { DEFAULT_BENCH, validateBench } from '../../src/loadgen/runner.js';
import { WORKLOADS } from '../../src/loadgen/workloads.js';
import { DEVICE_KINDS } from '../../src/devices/protocol.js';
import { DevmirrorError } from '../../src/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'devmirror-scenario-fuzz-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

const SCENARIOS = new URL('../../bench/scenarios/', import.meta.url);
const shipped = readdirSync(SCENARIOS)
  .filter((f) => /\.(json|ya?ml)$/.test(f))
  .map((f) => ({ name: f, text: readFileSync(new URL(f, SCENARIOS), 'utf8') }));
const shippedValues = shipped.map((s) => (/\.ya?ml$/.test(s.name) ? YAML.parse(s.text) : JSON.parse(s.text)) as Record<string, unknown>);

/** Loads a scenario as `devmirror bench --scenario` does; returns null when it is refused. */
function load(text: string, ext: 'json' | 'yaml'): BenchCli | null {
  const file = join(dir, `s${n++}.${ext}`);
  writeFileSync(file, text);
  let cli: BenchCli;
  try {
    cli = parseBenchArgs(['--scenario', file]);
    validateBench(cli.options);
  } catch (e) {
    expect(e, `${ext} ${text.slice(0, 300)}: threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`).toBeInstanceOf(DevmirrorError);
    expect((e as DevmirrorError).code).toBe('DM_ERR_VALIDATION');
    return null;
  } finally {
    rmSync(file, { force: true });
  }
  checkOptions(cli, `${ext} ${text.slice(0, 300)}`);
  return cli;
}

const int = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v);
const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

/** What BenchOptions promises once validated. */
function checkOptions(cli: BenchCli, what: string): void {
  const o = cli.options;
  const ok = (cond: boolean, field: string) => expect(cond, `${what}: accepted ${field} = ${JSON.stringify((o as unknown as Record<string, unknown>)[field])}`).toBe(true);
  ok(typeof o.devices === 'object' && o.devices !== null && !Array.isArray(o.devices) && Object.entries(o.devices).every(([k, v]) => DEVICE_KINDS.includes(k as never) && int(v) && (v as number) >= 0 && (v as number) <= 256), 'devices');
  ok(['faithful', 'aware', 'blind'].includes(o.policy), 'policy');
  ok((WORKLOADS as readonly string[]).includes(o.workload), 'workload');
  ok(['sequential', 'random', 'hotset'].includes(o.pattern), 'pattern');
  ok(num(o.dmaRate) && o.dmaRate >= 0, 'dmaRate');
  ok(o.writeMix === undefined || (num(o.writeMix) && o.writeMix >= 0 && o.writeMix <= 1), 'writeMix');
  ok(o.durationMs === undefined || (num(o.durationMs) && o.durationMs >= 0), 'durationMs');
  ok(o.ops === undefined || (int(o.ops) && o.ops >= 0), 'ops');
  ok(o.durationMs !== undefined || o.ops !== undefined || o.replay !== undefined, 'durationMs');
  ok(int(o.areaPages) && o.areaPages >= 1 && o.areaPages <= 262_144, 'areaPages');
  ok(int(o.rangePages) && o.rangePages >= 1, 'rangePages');
  ok(int(o.seed), 'seed');
  ok(num(o.deadlineMs) && o.deadlineMs > 0, 'deadlineMs');
  ok(o.clients === undefined || (int(o.clients) && o.clients >= 0 && o.clients <= 4000), 'clients');
  ok(
    o.replay === undefined ||
      (typeof o.replay === 'object' &&
        o.replay !== null &&
        typeof o.replay.file === 'string' &&
        (o.replay.timeScale === undefined || (num(o.replay.timeScale) && o.replay.timeScale >= 0)) &&
        (o.replay.density === undefined || (num(o.replay.density) && o.replay.density >= 0 && o.replay.density <= 1)) &&
        (o.replay.dmaTarget === undefined || o.replay.dmaTarget === 'written' || o.replay.dmaTarget === 'window') &&
        (o.replay.space === undefined || (int(o.replay.space) && o.replay.space >= 0))),
    'replay',
  );
  ok(
    o.deviceOptions === undefined ||
      (typeof o.deviceOptions === 'object' &&
        o.deviceOptions !== null &&
        Object.entries(o.deviceOptions).every(
          ([kind, opts]) =>
            (kind === 'gpu' &&
              Object.entries(opts ?? {}).every(([k, v]) => (k === 'granularityPages' && int(v) && (v as number) >= 1 && (v as number) <= 1 << 18) || (k === 'xnack' && typeof v === 'boolean'))) ||
            (kind === 'rdma' && Object.entries(opts ?? {}).every(([k, v]) => ['implicit', 'write'].includes(k) && typeof v === 'boolean')),
        )),
    'deviceOptions',
  );
  if (cli.sweep) expect(cli.sweep.values.length, what).toBeGreaterThan(0);
}

// ---- generators -----------------------------------------------------------------------------------------

const junk = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(null, true, false, '', 'NaN', '1e309', '-1', -1, 0, 0.5, 1.5, 2 ** 53, 1e308, -1e308, [], {}, [1], { a: 1 }, '10s', 'abc'),
);
/** Plausible values for each scenario key (sometimes out of range), or junk. */
const VALUES: Record<string, fc.Arbitrary<unknown>> = {
  workload: fc.constantFrom(...WORKLOADS, 'nope'),
  devices: fc.oneof(fc.dictionary(fc.constantFrom(...DEVICE_KINDS, 'fpga'), fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constantFrom(-1, 257, 1.5)), { maxKeys: 4 }), fc.constantFrom(null, [], 'gpu=1', 4)),
  policy: fc.constantFrom('faithful', 'aware', 'blind', 'lazy'),
  dmaRate: fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.constantFrom(-1, 1e308)),
  writeMix: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(-0.1, 1.1)),
  durationMs: fc.oneof(fc.integer({ min: 1, max: 20_000 }), fc.constantFrom(0, -5)),
  ops: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.constantFrom(-1, 0.5)),
  areaPages: fc.oneof(fc.integer({ min: 1, max: 16_384 }), fc.constantFrom(0, 262_145)),
  rangePages: fc.oneof(fc.integer({ min: 1, max: 2048 }), fc.constantFrom(0)),
  pattern: fc.constantFrom('random', 'sequential', 'hotset', 'zigzag'),
  seed: fc.oneof(fc.nat(), fc.constantFrom(-1, 0.5)),
  deadlineMs: fc.oneof(fc.integer({ min: 1, max: 60_000 }), fc.constantFrom(0, -1)),
  clients: fc.oneof(fc.integer({ min: 0, max: 10 }), fc.constantFrom(-1, 4001)),
  replay: fc.oneof(
    fc.record({ file: fc.constantFrom('bench/fixtures/strace/python-list.strace', 'nope.strace'), timeScale: fc.oneof(fc.constantFrom(0, 1, -1)), density: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constant(2)), dmaTarget: fc.constantFrom('written', 'window', 'nope', 3), space: fc.oneof(fc.nat({ max: 40 }), fc.constantFrom(-1, 1.5, '2')) }, { requiredKeys: ['file'] }),
    fc.constantFrom(null, 'file.strace', 5),
  ),
  deviceOptions: fc.oneof(
    fc.dictionary(
      fc.constantFrom('gpu', 'rdma', 'kvm', 'fpga'),
      fc.dictionary(fc.constantFrom('granularityPages', 'xnack', 'implicit', 'write', 'speed'), fc.oneof(fc.integer({ min: 0, max: 1 << 19 }), fc.boolean(), fc.constantFrom(1.5, '16', null)), { maxKeys: 3 }),
      { maxKeys: 3 },
    ),
    fc.constantFrom(null, [], 'gpu.granularityPages=16', 16),
  ),
  description: fc.string({ maxLength: 40 }),
  sweep: fc.oneof(fc.constantFrom('devices=1,2', 'range=1,16', 'policy=blind,aware', 'clients=1', 'nope=1', 'range=', 'range=0'), fc.string({ maxLength: 12 })),
  baselines: fc.oneof(fc.boolean(), fc.constantFrom('yes', 1)),
};
const scenarioObject = fc
  .tuple(
    fc.record(Object.fromEntries(Object.entries(VALUES).map(([k, a]) => [k, fc.oneof({ arbitrary: a, weight: 4 }, { arbitrary: junk, weight: 1 })])), { requiredKeys: [] }),
    fc.oneof({ arbitrary: fc.constant({}), weight: 6 }, { arbitrary: fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), junk, { maxKeys: 2 }), weight: 1 }),
  )
  .map(([known, extra]) => ({ ...known, ...extra }));

/** A shipped scenario with some keys changed, removed or added. */
const mutatedScenario = fc
  .tuple(
    fc.nat(shippedValues.length - 1),
    fc.array(fc.tuple(fc.constantFrom('set', 'delete', 'junk'), fc.constantFrom(...Object.keys(VALUES)), fc.nat()), { minLength: 1, maxLength: 4 }),
    fc.constantFrom(...Object.values(VALUES)).chain((a) => a),
    junk,
  )
  .map(([i, muts, value, j]) => {
    const o: Record<string, unknown> = { ...shippedValues[i] };
    for (const [m, k] of muts) {
      if (m === 'delete') delete o[k];
      else o[k] = m === 'set' ? value : j;
    }
    return o;
  });

/** Text edits: a cut, an insertion, a deletion. */
const textMutation = (text: string) =>
  fc.array(fc.tuple(fc.constantFrom('cut', 'insert', 'delete'), fc.nat(), fc.oneof(fc.string({ maxLength: 5 }), fc.constantFrom('{', '}', '"', ':', ',', '\n', '- ', '&a ', '*a', '!!binary ', '<<: ', '---\n', '\t'))), { minLength: 1, maxLength: 4 }).map((muts) => {
    let t = text;
    for (const [m, i, s] of muts) {
      const at = t.length ? i % t.length : 0;
      if (m === 'cut') t = t.slice(0, at);
      else if (m === 'insert') t = t.slice(0, at) + s + t.slice(at);
      else t = t.slice(0, at) + t.slice(at + 1 + (i % 7));
    }
    return t;
  });

const yamlSpecials = fc.constantFrom(
  'a: &x [1, 2]\nb: *x\n',
  'workload: &w munmap\nops: 5\npolicy: *w\n',
  'base: &b { ops: 5 }\n<<: *b\n',
  '--- \nops: 5\n---\nops: 6\n',
  'ops: !!str 5\n',
  'ops: !!binary AAAA\n',
  'ops: 2001-12-14t21:59:43.10-05:00\n',
  'devices: !!set { gpu, rdma }\nops: 1\n',
  'ops: .inf\n',
  'ops: .nan\n',
  'ops: 0x10\n',
  'ops: 1_000\n',
  'ops: ~\n',
  '? [a, b]\n: 1\n',
  'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n',
  '%YAML 1.1\n---\nops: 5\nbaselines: yes\n',
  '',
  '# only a comment\n',
  '[]\n',
  '"just a string"\n',
);

// ---- the properties ----------------------------------------------------------------------------------------

describe('scenario loader fuzzing', () => {
  it('the shipped scenarios load and validate', () => {
    for (const s of shipped) expect(load(s.text, /\.ya?ml$/.test(s.name) ? 'yaml' : 'json'), s.name).not.toBeNull();
  });

  it('random JSON documents and objects of the scenario keys, as JSON and as YAML', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue({ maxDepth: 3 }), scenarioObject), fc.constantFrom<'json' | 'yaml'>('json', 'yaml'), (doc, ext) => {
        load(ext === 'json' ? JSON.stringify(doc) ?? 'null' : YAML.stringify(doc), ext);
      }),
      { numRuns: 300 },
    );
  });

  it('the shipped scenarios with keys changed, removed and added', () => {
    fc.assert(
      fc.property(mutatedScenario, fc.constantFrom<'json' | 'yaml'>('json', 'yaml'), (doc, ext) => {
        load(ext === 'json' ? JSON.stringify(doc) : YAML.stringify(doc), ext);
      }),
      { numRuns: 300 },
    );
  });

  it('text-level mutations of the shipped files, and YAML anchors, aliases, tags and documents', () => {
    fc.assert(
      fc.property(fc.nat(shipped.length - 1).chain((i) => fc.tuple(fc.constant(i), textMutation(shipped[i].text))), ([i, text]) => {
        load(text, /\.ya?ml$/.test(shipped[i].name) ? 'yaml' : 'json');
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(yamlSpecials, fc.option(textMutation('ops: 5\n'), { nil: undefined }), (text, more) => {
        load(text + (more ?? ''), 'yaml');
      }),
      { numRuns: 100 },
    );
  });

  it('regressions: options of the wrong type are DM_ERR_VALIDATION, not a TypeError or a run that starts from garbage', () => {
    const refused = [
      { devices: null, ops: 5 },
      { durationMs: 'abc' },
      { ops: 'five' },
      { ops: -1 },
      { dmaRate: 'fast', ops: 1 },
      { seed: 'x', ops: 1 },
      { deadlineMs: 0, ops: 1 },
      { replay: 5 },
      { replay: { file: 3 } },
      { replay: { file: 'x.strace', density: 2 } },
      { rangePages: 2 ** 53, ops: 1 },
      { rangePages: 1e308, ops: 1 },
    ];
    for (const doc of refused) expect(load(JSON.stringify(doc), 'json'), JSON.stringify(doc)).toBeNull();
    expect(load(JSON.stringify({ ...DEFAULT_BENCH, ops: 3 }), 'json')).not.toBeNull();
  });
});
