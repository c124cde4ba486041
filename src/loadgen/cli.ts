/**
 * `devmirror bench` command line: options from a scenario file (bench/scenarios/*.json) and the
 * command line (which wins), a progress bar on stderr (plain lines when stderr is not a TTY), the
 * JSON report on stdout or in --json, and a summary table on stderr.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import YAML from 'yaml';
import { DevmirrorError } from '../errors.js';
import { DEVICE_KINDS, type DeviceKind, type EventPolicy } from '../devices/protocol.js';
import { fmt, table } from '../lib/stats.js';
import { DEFAULT_BENCH, runBench, type BenchOptions, type BenchReport } from './runner.js';
import type { Pattern, WorkloadName } from './workloads.js';
import { measureBaselines } from './baselines.js';
import { closeShards } from './shards.js';
import { renderHtml } from './report-html.js';
import { parseSweep, runSweep, type SweepDimension, type SweepReport } from './sweep.js';
import { REMOTE_WORKLOADS, remoteSummary, renderRemoteHtml, runRemote, type RemoteOptions, type RemoteWorkload } from './remote.js';

/** Keys a scenario file may hold: the BenchOptions plus `description`, `sweep` and `baselines`. */
const SCENARIO_KEYS = new Set([...Object.keys(DEFAULT_BENCH), 'clients', 'ops', 'durationMs', 'replay', 'writeMix', 'deviceOptions', 'description', 'sweep', 'baselines']);

export const BENCH_USAGE = `devmirror bench [--scenario FILE.json|FILE.yaml] [--workload munmap|mprotect|madvise|soft-dirty|fork|migrate|compact|numa|oom-reaper|mixed]
                [--devices gpu=1,rdma=1,kvm=1,dmirror=1 | --devices N] [--policy faithful|aware|blind]
                [--clients M (external clients over <= 4 processes)] [--dma-rate N] [--write-mix 0.3] [--duration 10s | --ops N] [--area-pages N] [--range-pages N]
                [--pattern random|sequential|hotset] [--seed N] [--json FILE]
                [--replay FILE.strace [--time-scale 0|1|...] [--density 0.05] [--dma-target written|window] [--replay-space N]]   (strace -f -tt -e trace=memory,openat,close)
                [--device-option KIND.KEY=VALUE ...]   (gpu.granularityPages=16, gpu.xnack=false, rdma.implicit=true, rdma.write=false)
                [--sweep devices=1,2,4,8 | range=1,16,512 | policy=blind,faithful,aware | clients=1,10,100] [--baselines] [--html FILE.html]
devmirror bench --target http://HOST:PORT --process NAME [--window MAPPING] [--workload madvise|mprotect|munmap|soft-dirty|mixed]
                [--duration 10s | --ops N] [--range-pages N] [--area-pages N] [--concurrency N] [--json FILE] [--html FILE]
                [--token T (or DEVMIRROR_TOKEN), for a service whose API requires one]
                (load a running kernel service through its HTTP API; exits 1 if the sanitizer reports findings)`;

function duration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (!m) throw new DevmirrorError('DM_ERR_VALIDATION', `--duration: "${s}" is not a duration (e.g. 10s, 500ms)`);
  const v = Number(m[1]);
  return m[2] === 'ms' ? v : m[2] === 'm' ? v * 60_000 : v * 1000;
}

function int(name: string, s: string): number {
  if (!/^\d+$/.test(s)) throw new DevmirrorError('DM_ERR_VALIDATION', `--${name} must be a non-negative integer`);
  return Number(s);
}

export interface BenchCli {
  options: BenchOptions;
  json?: string;
  html?: string;
  sweep?: { dimension: SweepDimension; values: Array<number | string> };
  baselines: boolean;
  /** --target: load a running kernel service instead of starting a system. */
  remote?: RemoteOptions;
}

export function parseBenchArgs(argv: string[]): BenchCli {
  const { values } = parseArgs({
    args: argv,
    options: {
      scenario: { type: 'string' },
      workload: { type: 'string' },
      devices: { type: 'string' },
      policy: { type: 'string' },
      'dma-rate': { type: 'string' },
      'write-mix': { type: 'string' },
      duration: { type: 'string' },
      ops: { type: 'string' },
      'area-pages': { type: 'string' },
      'range-pages': { type: 'string' },
      pattern: { type: 'string' },
      seed: { type: 'string' },
      json: { type: 'string' },
      replay: { type: 'string' },
      sweep: { type: 'string' },
      clients: { type: 'string' },
      baselines: { type: 'boolean' },
      html: { type: 'string' },
      'time-scale': { type: 'string' },
      density: { type: 'string' },
      'dma-target': { type: 'string' },
      'replay-space': { type: 'string' },
      target: { type: 'string' },
      token: { type: 'string' },
      process: { type: 'string' },
      window: { type: 'string' },
      concurrency: { type: 'string' },
      'device-option': { type: 'string', multiple: true },
    },
    strict: true,
  });
  let o: BenchOptions = { ...DEFAULT_BENCH };
  if (values.scenario) {
    let file: Partial<BenchOptions> & { description?: string };
    try {
      const text = readFileSync(values.scenario, 'utf8');
      file = /\.ya?ml$/i.test(values.scenario) ? YAML.parse(text) : JSON.parse(text);
    } catch (e) {
      throw new DevmirrorError('DM_ERR_VALIDATION', `--scenario ${values.scenario}: ${(e as Error).message}`);
    }
    if (file === null || typeof file !== 'object' || Array.isArray(file)) throw new DevmirrorError('DM_ERR_VALIDATION', `--scenario ${values.scenario}: not an object`);
    const unknown = Object.keys(file).filter((k) => !SCENARIO_KEYS.has(k));
    if (unknown.length > 0) {
      throw new DevmirrorError('DM_ERR_VALIDATION', `--scenario ${values.scenario}: unknown key(s) ${unknown.join(', ')}; allowed: ${[...SCENARIO_KEYS].join(', ')}`);
    }
    // A scenario may carry its sweep and baselines, so one file reproduces a whole figure; the
    // command line still wins.
    const { description: _d, sweep, baselines, ...opts } = file as typeof file & { sweep?: string; baselines?: boolean };
    if (sweep !== undefined && values.sweep === undefined) values.sweep = String(sweep);
    if (baselines === true && values.baselines === undefined) values.baselines = true;
    o = { ...o, ...opts };
    // An operation count in the file means "this many": the default duration does not cut it short.
    if (opts.ops !== undefined && opts.durationMs === undefined) delete o.durationMs;
  }
  if (values.workload) o.workload = values.workload as WorkloadName;
  if (values.devices) {
    if (/^\d+$/.test(values.devices)) o.devices = Object.fromEntries(DEVICE_KINDS.map((k) => [k, Number(values.devices)]));
    else {
      o.devices = {};
      for (const part of values.devices.split(',')) {
        const [k, n] = part.split('=');
        o.devices[k as DeviceKind] = int(`devices ${k}`, n ?? '');
      }
    }
  }
  if (values.policy) o.policy = values.policy as EventPolicy;
  if (values['dma-rate']) o.dmaRate = int('dma-rate', values['dma-rate']);
  if (values['write-mix'] !== undefined) {
    o.writeMix = Number(values['write-mix']);
    if (!(o.writeMix >= 0 && o.writeMix <= 1)) throw new DevmirrorError('DM_ERR_VALIDATION', '--write-mix must be between 0 and 1');
  }
  if (values.duration) {
    o.durationMs = duration(values.duration);
    if (!values.ops) delete o.ops;
  }
  if (values.ops) {
    o.ops = int('ops', values.ops);
    if (!values.duration) delete o.durationMs;
  }
  if (values['area-pages']) o.areaPages = int('area-pages', values['area-pages']);
  if (values['range-pages']) o.rangePages = int('range-pages', values['range-pages']);
  if (values.pattern) o.pattern = values.pattern as Pattern;
  if (values.seed) o.seed = int('seed', values.seed);
  if (values.clients) o.clients = int('clients', values.clients);
  for (const spec of values['device-option'] ?? []) {
    // KIND.KEY=VALUE, e.g. gpu.granularityPages=16; validateBench checks kind, key and value.
    const m = /^([a-z]+)\.([A-Za-z]+)=(.+)$/.exec(spec);
    if (!m) throw new DevmirrorError('DM_ERR_VALIDATION', `--device-option ${spec}: expected KIND.KEY=VALUE (e.g. gpu.granularityPages=16)`);
    const [, kind, key, raw] = m;
    if (!/^(true|false|\d+)$/.test(raw)) throw new DevmirrorError('DM_ERR_VALIDATION', `--device-option ${spec}: VALUE must be true, false or an integer`);
    const value = raw === 'true' ? true : raw === 'false' ? false : Number(raw);
    const all = (o.deviceOptions = { ...o.deviceOptions });
    all[kind as DeviceKind] = { ...all[kind as DeviceKind], [key]: value };
  }
  if (values.replay) {
    const ts = values['time-scale'] !== undefined ? Number(values['time-scale']) : 0;
    const density = values.density !== undefined ? Number(values.density) : undefined;
    if (!Number.isFinite(ts) || ts < 0) throw new DevmirrorError('DM_ERR_VALIDATION', '--time-scale must be a number >= 0');
    if (density !== undefined && !(density >= 0 && density <= 1)) throw new DevmirrorError('DM_ERR_VALIDATION', '--density must be between 0 and 1');
    o.replay = { file: values.replay, timeScale: ts, ...(density !== undefined ? { density } : {}) };
  }
  if (values['replay-space'] !== undefined) {
    const space = values['replay-space'];
    if (!/^\d+$/.test(space)) throw new DevmirrorError('DM_ERR_VALIDATION', '--replay-space must be an address space number (0, 1, ...: the report lists them)');
    if (!o.replay) throw new DevmirrorError('DM_ERR_VALIDATION', '--replay-space goes with a replay (--replay, or replay in the scenario)');
    o.replay = { ...o.replay, space: Number(space) };
  }
  const dmaTarget = values['dma-target'];
  if (dmaTarget !== undefined) {
    if (dmaTarget !== 'written' && dmaTarget !== 'window') throw new DevmirrorError('DM_ERR_VALIDATION', '--dma-target must be written or window');
    if (!o.replay) throw new DevmirrorError('DM_ERR_VALIDATION', '--dma-target goes with a replay (--replay, or replay in the scenario)');
    o.replay = { ...o.replay, dmaTarget };
  }
  if (!['faithful', 'aware', 'blind'].includes(o.policy)) throw new DevmirrorError('DM_ERR_VALIDATION', '--policy must be faithful, aware or blind');
  let remote: RemoteOptions | undefined;
  if (values.target !== undefined) {
    let url: URL;
    try {
      url = new URL(values.target);
    } catch {
      throw new DevmirrorError('DM_ERR_VALIDATION', `--target ${values.target} is not a URL (http://host:port)`);
    }
    if (!/^https?:$/.test(url.protocol)) throw new DevmirrorError('DM_ERR_VALIDATION', '--target must be an http(s):// URL');
    if (!values.process) throw new DevmirrorError('DM_ERR_VALIDATION', '--target needs --process NAME');
    if (!REMOTE_WORKLOADS.includes(o.workload as RemoteWorkload)) throw new DevmirrorError('DM_ERR_VALIDATION', `--target runs the workloads ${REMOTE_WORKLOADS.join(', ')}`);
    if (values.sweep || values.replay || values.clients || values.baselines || values['device-option']) throw new DevmirrorError('DM_ERR_VALIDATION', '--target does not take --sweep, --replay, --clients, --baselines or --device-option');
    remote = {
      target: url.origin,
      process: values.process,
      ...(values.window ? { window: values.window } : {}),
      workload: o.workload as RemoteWorkload,
      ...(o.ops !== undefined ? { ops: o.ops } : {}),
      ...(o.durationMs !== undefined ? { durationMs: o.durationMs } : {}),
      rangePages: o.rangePages,
      areaPages: o.areaPages,
      seed: o.seed,
      concurrency: values.concurrency ? Math.max(1, int('concurrency', values.concurrency)) : 1,
      // For a service whose API requires a token (DEVMIRROR_API_AUTH).
      ...((values.token ?? process.env.DEVMIRROR_TOKEN) ? { token: values.token ?? process.env.DEVMIRROR_TOKEN } : {}),
    };
  } else if (values.process || values.window || values.concurrency || values.token) {
    throw new DevmirrorError('DM_ERR_VALIDATION', '--process, --window, --concurrency and --token go with --target');
  }
  return { options: o, json: values.json, html: values.html, sweep: values.sweep ? parseSweep(values.sweep) : undefined, baselines: values.baselines === true, ...(remote ? { remote } : {}) };
}

/** The replay's lines: what was replayed, and each address space (the devices' one marked). */
function replaySummary(r: NonNullable<BenchReport['replay']>): string {
  const head = `replayed ${r.replayed}/${r.calls} calls of ${r.file} (${r.tasks} tasks in ${r.spaces.length} address spaces), ${r.touchedPages} pages touched, ${r.imageMappings} image mappings; refused: ${JSON.stringify(r.refused)}\n`;
  if (r.spaces.length < 2) return head;
  const lines = r.spaces.map((s) => {
    const tasks = s.pids.length === 1 ? `task ${s.pids[0]}` : `tasks ${s.pids[0]} and ${s.pids.length - 1} more`;
    const end = s.ended === null ? 'lives at the end' : s.ended === 'exec' ? `exec'd away${s.exited ? ', exited' : ''}` : `exited${s.exited ? '' : ' (not replayed)'}`;
    return `  ${s.target ? '*' : ' '} space ${s.index}: ${tasks}, ${s.memoryCalls} memory calls, ${end}`;
  });
  return `${head}address spaces (* the devices'; --replay-space N picks another):\n${lines.join('\n')}\n`;
}

export function summary(r: BenchReport): string {
  const rep = r.replay ? replaySummary(r.replay) : '';
  const ref = r.events.filter((e) => e.refused > 0).map((e) => `${e.event} ${e.refused}`).join(', ');
  const head = rep + (ref ? `refused non-blockable starts: ${ref}\n` : '') + `${r.ops} operations in ${(r.durationMs / 1000).toFixed(1)} s (${r.opsPerSec}/s), ${r.invalidations} invalidations (${r.invalidationsPerSec}/s); device faults ${r.totals.deviceFaults}, refaults ${r.totals.refaults} pages in ${r.totals.refaultFaults} faults; sanitizer: ${r.totals.checked} accesses checked, ${r.totals.findings} findings; evictions ${r.totals.evictions}`;
  const rows = r.byEventAndKind.map((x) => ({
    event: x.event,
    'device kind': x.deviceKind,
    invalidations: x.invalidations,
    'round p50': fmt(x.round.p50),
    'round p99': fmt(x.round.p99),
    'ack p50': fmt(x.ack.p50),
    'ack p90': fmt(x.ack.p90),
    'ack p99': fmt(x.ack.p99),
    'ack p99_9': fmt(x.ack.p99_9),
    'ack max': fmt(x.ack.max),
  }));
  const b = r.baselines;
  const base = b
    ? `\nbaselines at ${b.workers} workers (same run): bare Atomics blocking p50 ${fmt(b.atomicsBlocking.p50)}, spin ${fmt(b.atomicsSpin.p50)}, waitAsync ${fmt(b.atomicsWaitAsync.p50)}, postMessage ${fmt(b.postMessage.p50)}${b.wsEcho ? `, ws echo ${fmt(b.wsEcho.p50)}` : ''}${b.wsFanout ? `, ws fan-out to ${b.wsFanout.clients} connections p50 ${fmt(b.wsFanout.lat.p50)} / p99 ${fmt(b.wsFanout.lat.p99)}` : ''}; devmirror round p50 ${fmt(r.round.p50)} = ${(r.round.p50 / Math.min(b.atomicsBlocking.p50, b.atomicsSpin.p50)).toFixed(2)}x the better Atomics, ${(r.round.p50 / b.postMessage.p50).toFixed(2)}x postMessage (the round includes the kernel's page-table work)\n`
    : '';
  const causes = r.devices
    .filter((d) => d.refaults > 0)
    .map((d) => `${d.name} ${d.refaults} (${Object.entries(d.refaultCauses ?? {}).sort((x, y) => y[1] - x[1]).map(([c, n]) => `${c} ${n}`).join(', ')})`);
  const why = causes.length > 0 ? `refaulted pages by the invalidation that took them (EVENT:origin): ${causes.join('; ')}\n` : '';
  return `${head}\n${why}\n${table(rows)}\n${base}`;
}

export async function benchMain(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(BENCH_USAGE + '\n');
    return;
  }
  const cli = parseBenchArgs(argv);
  const { options, json } = cli;
  if (cli.remote) return remoteMain(cli, cli.remote);
  const total = options.durationMs ?? options.ops ?? 0;
  const tty = process.stderr.isTTY === true;
  const bar = tty ? new cliProgress.SingleBar({ format: ' {label} {bar} {percentage}% | {ops} ops | {inv} invalidations', hideCursor: true }, cliProgress.Presets.shades_classic) : null;
  const progressFor = (label: string) => {
    bar?.start(total, 0, { ops: 0, inv: 0, label });
    return (d: { elapsedMs: number; ops: number; invalidations: number }) => {
      const done = options.durationMs !== undefined ? Math.min(total, d.elapsedMs) : d.ops;
      if (bar) bar.update(done, { ops: d.ops, inv: d.invalidations, label });
      else process.stderr.write(`bench ${label}: ${(d.elapsedMs / 1000).toFixed(0)} s, ${d.ops} ops, ${d.invalidations} invalidations\n`);
    };
  };
  const finish = async (r: BenchReport): Promise<void> => {
    bar?.update(total);
    bar?.stop();
    if (cli.baselines) {
      const n = Object.values(r.options.devices).reduce((a, b) => a + (b ?? 0), 0);
      process.stderr.write(`bench: measuring baselines at ${n} workers...\n`);
      r.baselines = await measureBaselines(n, undefined, r.options.clients ?? 0);
    }
  };
  let out: BenchReport | SweepReport;
  if (cli.sweep) {
    const sweep = await runSweep(options, cli.sweep.dimension, cli.sweep.values, (v) => progressFor(`${cli.sweep!.dimension}=${v}`), finish);
    out = sweep;
    for (const [i, r] of sweep.runs.entries()) process.stderr.write(`\n== ${cli.sweep.dimension} = ${cli.sweep.values[i]}\n` + summary(r));
    if (cli.sweep.dimension === 'policy') {
      // Runs do different amounts of work (equal durations, or replays whose length depends on
      // the policy): compare refaults per operation and per thousand device accesses.
      const line = (what: string, f: (r: BenchReport) => number): string => {
        const per = new Map(sweep.runs.map((r, i) => [String(cli.sweep!.values[i]), f(r)]));
        const blind = per.get('blind');
        return `${what}: ${[...per].map(([p, n]) => `${p} ${n.toFixed(1)}${blind !== undefined && p !== 'blind' && n > 0 ? ` (blind/${p} = ${(blind / n).toFixed(1)}x)` : ''}`).join(', ')}\n`;
      };
      // And per device kind, in device faults that refaulted and in refaulted pages (a gpu's fault
      // of a 2 MiB range is one fault and up to 512 pages).
      const kinds = [...new Set(sweep.runs.flatMap((r) => r.devices.map((d) => d.kind)))];
      const perKind = kinds
        .map((kind) => {
          const of = (r: BenchReport, f: (d: BenchReport['devices'][number]) => number): number => r.devices.filter((d) => d.kind === kind).reduce((a, d) => a + f(d), 0);
          return (
            line(`${kind}: device faults that refaulted`, (r) => of(r, (d) => d.refaultFaults)) +
            line(`${kind}: refaulted pages`, (r) => of(r, (d) => d.refaults)) +
            line(`${kind}: accesses checked`, (r) => of(r, (d) => d.checked))
          );
        })
        .join('');
      process.stderr.write(
        '\n' +
          line('refaulted pages per operation', (r) => (r.ops ? r.totals.refaults / r.ops : 0)) +
          line('refaulted pages per 1000 device accesses', (r) => (r.totals.checked ? (1000 * r.totals.refaults) / r.totals.checked : 0)) +
          line('device faults that refaulted, per 1000 device accesses', (r) => (r.totals.checked ? (1000 * r.totals.refaultFaults) / r.totals.checked : 0)) +
          perKind,
      );
    }
  } else {
    out = await runBench(options, progressFor(options.workload));
    await finish(out);
    process.stderr.write('\n' + summary(out));
  }
  const text = JSON.stringify(out, null, 2);
  if (json) writeFileSync(json, text + '\n');
  else process.stdout.write(text + '\n');
  if (cli.html) {
    writeFileSync(cli.html, renderHtml(out));
    process.stderr.write(`bench: HTML report in ${cli.html}\n`);
  }
  await closeShards();
}

/** `--target`: load a running service; the report's figures come from the service's API. */
async function remoteMain(cli: BenchCli, o: RemoteOptions): Promise<void> {
  process.stderr.write(`bench: ${o.workload} against ${o.process} at ${o.target}\n`);
  const r = await runRemote(o, (d) => process.stderr.write(`bench ${o.workload}: ${(d.elapsedMs / 1000).toFixed(0)} s, ${d.ops} ops\n`));
  process.stderr.write('\n' + remoteSummary(r));
  const text = JSON.stringify(r, null, 2);
  if (cli.json) writeFileSync(cli.json, text + '\n');
  else process.stdout.write(text + '\n');
  if (cli.html) {
    writeFileSync(cli.html, renderRemoteHtml(r));
    process.stderr.write(`bench: HTML report in ${cli.html}\n`);
  }
  // A load run that makes a device use stale memory has failed, whatever its latencies.
  if (r.totals.findings > 0) process.exitCode = 1;
}
