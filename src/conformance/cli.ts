/**
 * devmirror conformance: exit 0 when every check passes (or is skipped), 1 when one fails or the
 * target could not be set up, 2 on a usage error.
 */
import { parseArgs } from 'node:util';
import { DevmirrorError } from '../errors.js';
import { DEVICE_KINDS, EVENT_POLICIES, type DeviceKind } from '../devices/protocol.js';
import { CHECK_IDS } from './checks.js';
import { formatRow, formatTable, toJson } from './report.js';
import { runConformance, type RunOptions } from './runner.js';
import type { Mode } from './target.js';

export const CONFORMANCE_USAGE = `usage: devmirror conformance --kind gpu|rdma|kvm|dmirror [target] [options]

targets (one):
  --url ws://HOST:PORT/v1/notifier/ws   a device already attached to that service (found by kind;
                                         --device ID|NAME when several); driven through its HTTP API
                                         (--window NAME: the mapping of its process to use). The
                                         release check exits the device's process: --skip release
  --command "CMD ..."                   start an embedded service, run CMD with DEVMIRROR_URL,
                                         DEVMIRROR_TOKEN, DEVMIRROR_PROCESS, DEVMIRROR_PID,
                                         DEVMIRROR_WINDOW, DEVMIRROR_KIND set ({url} {token} {process}
                                         {pid} {window} {kind} are substituted), wait for it to attach;
                                         the restart check restarts that kernel (same port, new boot id)
  --builtin worker|external             the built-in personality as a worker thread, or as a
                                         devmirror device client process (the default: worker)
options:
  --token T          channel and API token (default DEVMIRROR_TOKEN, else devmirror-local)
  --policy P         builtin: faithful (default), aware, blind
  --bug MODE         apply a deliberate bug mode first (ack-before-quiesce, skip-seq-retry,
                     ignore-event:EVENT, lock-across-fault for dmirror): the suite's self-test
  --only a,b --skip a,b   checks by id: ${CHECK_IDS.join(', ')}
  --attach-ms N      how long a launched client may take to attach (default 20000)
  --json             machine output
exit: 0 all passed, 1 a check failed (or the target could not be set up), 2 usage error`;

const BUG_RE = /^(ack-before-quiesce|skip-seq-retry|lock-across-fault|ignore-event:(UNMAP|CLEAR|PROTECTION_VMA|PROTECTION_PAGE|SOFT_DIRTY|RELEASE|MIGRATE|EXCLUSIVE))$/;

/** Parses the command line; throws DM_ERR_VALIDATION on a usage error. */
export function parseConformanceArgs(argv: string[]): RunOptions & { json: boolean } {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        kind: { type: 'string' },
        url: { type: 'string' },
        command: { type: 'string' },
        builtin: { type: 'string' },
        token: { type: 'string' },
        device: { type: 'string' },
        window: { type: 'string' },
        policy: { type: 'string' },
        bug: { type: 'string' },
        only: { type: 'string' },
        skip: { type: 'string' },
        'attach-ms': { type: 'string' },
        json: { type: 'boolean' },
      },
      strict: true,
    }).values;
  } catch (e) {
    throw new DevmirrorError('DM_ERR_VALIDATION', (e as Error).message);
  }
  const bad = (m: string): never => {
    throw new DevmirrorError('DM_ERR_VALIDATION', m);
  };
  if (!values.kind || !DEVICE_KINDS.includes(values.kind as DeviceKind)) bad('--kind must be one of gpu, rdma, kvm, dmirror');
  const targets = [values.url, values.command, values.builtin].filter((x) => x !== undefined).length;
  if (targets > 1) bad('give one of --url, --command, --builtin');
  if (values.builtin !== undefined && values.builtin !== 'worker' && values.builtin !== 'external') bad('--builtin must be worker or external');
  if (values.url !== undefined) {
    let u: URL;
    try {
      u = new URL(values.url);
    } catch {
      return bad(`--url ${values.url} is not a URL`);
    }
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:') bad('--url must be ws:// or wss://');
  }
  if (values.policy !== undefined && !EVENT_POLICIES.includes(values.policy as never)) bad('--policy must be faithful, aware or blind');
  if (values.bug !== undefined && !BUG_RE.test(values.bug)) bad(`--bug ${values.bug} is not a bug mode`);
  const list = (s: string | undefined, what: string): string[] | undefined => {
    if (s === undefined) return undefined;
    const ids = s.split(',').map((x) => x.trim()).filter(Boolean);
    for (const id of ids) if (!CHECK_IDS.includes(id)) bad(`${what}: unknown check ${id}`);
    return ids;
  };
  const attachMs = values['attach-ms'] === undefined ? undefined : Number(values['attach-ms']);
  if (attachMs !== undefined && !(Number.isInteger(attachMs) && attachMs > 0)) bad('--attach-ms must be a positive integer');
  if ((values.device !== undefined || values.window !== undefined) && values.url === undefined) bad('--device and --window apply to --url only');
  const mode: Mode = values.url !== undefined ? 'url' : values.command !== undefined ? 'command' : values.builtin === 'external' ? 'builtin-external' : 'builtin-worker';
  return {
    mode,
    kind: values.kind as DeviceKind,
    url: values.url,
    command: values.command,
    token: values.token ?? process.env.DEVMIRROR_TOKEN,
    device: values.device,
    window: values.window,
    policy: values.policy,
    bug: values.bug,
    only: list(values.only, '--only'),
    skip: list(values.skip, '--skip'),
    attachMs,
    json: values.json ?? false,
  };
}

export async function conformanceMain(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(CONFORMANCE_USAGE + '\n');
    return 0;
  }
  let o: ReturnType<typeof parseConformanceArgs>;
  try {
    o = parseConformanceArgs(argv);
  } catch (e) {
    process.stderr.write(`devmirror conformance: ${e instanceof DevmirrorError ? `${e.code}: ` : ''}${(e as Error).message}\n${CONFORMANCE_USAGE}\n`);
    return 2;
  }
  try {
    const report = await runConformance({
      ...o,
      // The table streams a row per check; JSON waits for the end.
      onResult: o.json ? undefined : (r) => process.stderr.write(`  ${formatRow(r)}\n`),
    });
    process.stdout.write(o.json ? JSON.stringify(toJson(report), null, 2) + '\n' : formatTable(report) + '\n');
    return report.passed ? 0 : 1;
  } catch (e) {
    const code = e instanceof DevmirrorError ? e.code : ((e as { code?: string }).code ?? 'DM_ERR_INTERNAL');
    if (o.json) process.stdout.write(JSON.stringify({ passed: false, error: { code, message: (e as Error).message } }) + '\n');
    process.stderr.write(`devmirror conformance: ${code}: ${(e as Error).message}\n`);
    return 1;
  }
}
