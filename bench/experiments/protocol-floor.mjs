/**
 * Experiment: what the channel protocol itself costs per round, without devmirror's kernel, core,
 * device or sessions, against the bare `ws` echo and devmirror's round (bench:channel's N = 1
 * round), all three set up at once and measured in alternating passes in one process.
 *
 *   echo      the floor of bench:channel: a 48-byte frame to the client, echoed back
 *   protocol  the least a start/ack/end round needs on the wire and in the codec: the server
 *             encodes an InvalidateStart from its fields (the hot encoder), the client decodes it
 *             with decodeServerFrame and answers with encodeAckFields, the server decodes the ack
 *             with decodeAckFields and resolves the round. No InvalidateEnd, as devmirror's clients
 *             subscribe with no_end (END=1: one after the round, corked with the next Start as a
 *             Session sends it, and decoded by the client). A plain ws server and a ws client, no
 *             Hello, no subscription state.
 *   devmirror the service with one DeviceClient process subscribed (bench:channel's round)
 *
 * Every client process is pinned with this process on one CPU (`together`, the default) or on the
 * other (`apart`). So `protocol / echo` is the share of the 1.3x budget the protocol's three frames
 * and codec take on this machine before any of devmirror's code runs.
 *
 * NOCORK=1 adds the protocol once more, on its own connection, writing each frame at once instead
 * of corking the socket until the next tick as a Session does.
 *
 *   npm run build && [NOCORK=1] node bench/experiments/protocol-floor.mjs [placement=together|apart] [passes=6] [rounds=20000]
 *        [variant=a patched copy of the build, as for channel-ab.mjs: measured as a fourth subject]
 *
 * Used in docs/benchmarks.md ("The external round on the Xeon host").
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const hf = await import(`${here}/dist/src/channel/hot-frames.js`);
const { decodeServerFrame } = await import(`${here}/dist/src/channel/codec.js`);

if (process.argv[2] === 'child') {
  // The protocol's client: decode every server frame as DeviceClient does, answer each Start.
  const { default: WebSocket } = await import('ws');
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
  const ws = new WebSocket(process.argv[3], { perMessageDeflate: false });
  let ends = 0;
  ws.on('message', (data) => {
    const f = decodeServerFrame(data);
    if (f.body === 'invalidateStart') {
      const s = f.invalidateStart;
      ws.send(hf.encodeAckFields(Number(s.invalidationId), Number(s.subscriptionId), 0, false));
    } else if (f.body === 'invalidateEnd') ends++;
  });
  ws.on('open', () => process.stdout.write('ready\n'));
  process.on('exit', () => ends);
} else {
  const [placement = 'together', passesArg = '6', roundsArg = '20000', variantRoot] = process.argv.slice(2);
  const PASSES = Number(passesArg);
  const ROUNDS = Number(roundsArg);
  const PAGE = 4096;
  const { WebSocketServer } = await import('ws');
  const clients = await import(`${here}/dist/src/loadgen/client-processes.js`);
  const { allowedCpus, pinningUnavailable, setProcessAffinity } = await import(`${here}/dist/src/lib/affinity.js`);
  const why = pinningUnavailable();
  if (why !== null) throw new Error(`this experiment pins its processes: ${why}`);
  const cpus = allowedCpus();
  const there = String(placement === 'apart' ? cpus[1] : cpus[0]);
  setProcessAffinity(process.pid, String(cpus[0]));

  // protocol: a bare ws server speaking the three frames.
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const conn = new Promise((r) => wss.once('connection', r));
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', `ws://127.0.0.1:${wss.address().port}`], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise((r) => child.stdout.on('data', (d) => d.toString().includes('ready') && r()));
  const ws = await conn;
  setProcessAffinity(child.pid, there);
  let id = 1;
  let done = null;
  let corked = false;
  const sock = ws._socket;
  const send = (frame) => {
    if (!corked) {
      corked = true;
      sock.cork();
      process.nextTick(() => {
        corked = false;
        sock.uncork();
      });
    }
    ws.send(frame);
  };
  ws.on('message', (data) => {
    const a = hf.decodeAckFields(data);
    if (a === null || a.invalidationId !== id) throw new Error('unexpected ack');
    done();
  });
  const start = 0x7f0000000000;
  const protocol = async () => {
    id++;
    await new Promise((resolve) => {
      done = resolve;
      send(hf.encodeStartFields(id, 1_000_001, 100, start, start + PAGE, 1, 1, null, id * 2, 'madvise'));
    });
    // No InvalidateEnd: devmirror's clients subscribe with no_end (since 11-29), like for like.
    if (process.env.END) send(hf.encodeEndFields(id, 1_000_001, 100, start, start + PAGE, 1, 1, null));
  };

  // devmirror: bench:channel's system at N = 1 (of this build, or of a variant's).
  const system = async (root) => {
    const { Service } = await import(`${root}/dist/src/service.js`);
    const { buildServer } = await import(`${root}/dist/src/http/server.js`);
    const { PROT } = await import(`${root}/dist/src/kernel/kernel.js`);
    const { MmuNotifierEvent } = await import(`${root}/dist/src/notifier/range.js`);
    const rootClients = await import(`${root}/dist/src/loadgen/client-processes.js`);
    const svc = new Service({ kernel: { memoryBytes: 64 * 1024 * 1024 }, channel: { maxSubscriptions: 4096 }, deadlineMs: 60_000 });
    const app = await buildServer(svc, { logger: false });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const k = svc.kernel;
    const p = k.createProcess('bench');
    const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE });
    const children = await rootClients.startClientProcesses(`ws://127.0.0.1:${app.server.address().port}/v1/notifier/ws`, 'devmirror-local', p.pid, a, 16 * PAGE, 1);
    for (const c of children) setProcessAffinity(c.pid, there);
    return {
      round: async () => {
        const r = await k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
        k.notifyEnd(p.mm, r);
      },
      close: async () => {
        for (const c of children) c.stdin.end();
        await svc.stop();
        await app.close();
      },
    };
  };
  const systems = [await system(here), ...(variantRoot ? [await system(variantRoot)] : [])];

  const floor = await clients.openFanoutFloor(48, 1);
  for (const pid of floor.pids) setProcessAffinity(pid, there);
  // NOCORK=1: a second protocol subject on its own connection that writes each frame at once,
  // without the socket corked until the next tick (as a Session corks it).
  const extra = {};
  if (process.env.NOCORK) {
    const conn2 = new Promise((r) => wss.once('connection', r));
    const child2 = spawn(process.execPath, [fileURLToPath(import.meta.url), 'child', `ws://127.0.0.1:${wss.address().port}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise((r) => child2.stdout.on('data', (d) => d.toString().includes('ready') && r()));
    const ws2 = await conn2;
    setProcessAffinity(child2.pid, there);
    let id2 = 1;
    let done2 = null;
    ws2.on('message', (data) => {
      const a2 = hf.decodeAckFields(data);
      if (a2 === null || a2.invalidationId !== id2) throw new Error('unexpected ack');
      done2();
    });
    extra['no cork'] = async () => {
      id2++;
      await new Promise((resolve) => {
        done2 = resolve;
        ws2.send(hf.encodeStartFields(id2, 1_000_001, 100, start, start + PAGE, 1, 1, null, id2 * 2, 'madvise'));
      });
    };
    process.on('exit', () => child2.kill());
  }
  const subjects = { echo: () => floor.round(), protocol, ...extra, devmirror: systems[0].round, ...(variantRoot ? { variant: systems[1].round } : {}) };
  const names = Object.keys(subjects);
  for (const n of names) for (let i = 0; i < 5000; i++) await subjects[n]();
  const p50 = Object.fromEntries(names.map((n) => [n, []]));
  for (let pass = 0; pass < PASSES; pass++) {
    // The order turns every pass, so no subject always follows the same one.
    for (const n of pass % 2 ? [...names].reverse() : names) {
      const lat = new Float64Array(ROUNDS);
      for (let i = 0; i < ROUNDS; i++) {
        const t = process.hrtime.bigint();
        await subjects[n]();
        lat[i] = Number(process.hrtime.bigint() - t) / 1000;
        if ((i & 63) === 63) await new Promise((r) => setImmediate(r));
      }
      lat.sort();
      p50[n].push(lat[ROUNDS >> 1]);
    }
  }
  console.log(`placement ${placement} (this process on CPU ${cpus[0]}, clients on CPU ${there}); ${ROUNDS} rounds a pass`);
  for (const n of names) {
    const ratios = n === 'echo' ? '' : `   /echo ${p50[n].map((x, i) => (x / p50.echo[i]).toFixed(2)).join(' ')}`;
    console.log(`${n.padEnd(9)} p50 ${p50[n].map((x) => x.toFixed(1)).join(' ')}${ratios}`);
  }
  child.stdin.end();
  for (const s2 of systems) await s2.close();
  await floor.close();
  ws.terminate();
  wss.close();
  process.exit(0);
}
