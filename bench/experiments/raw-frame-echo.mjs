/**
 * Experiment: the bare ws echo of bench:channel (N = 1, pinned), its server sending with ws.send,
 * against the same echo whose server writes the frame already framed (the two header bytes and the
 * payload in one Buffer) straight to the socket, the Buffer reused or copied per round. Asks
 * whether framing server frames itself (one write of one buffer instead of ws's two-chunk write)
 * would make a round measurably cheaper. All three are set up at once and measured in alternating
 * blocks (src/lib/interleave.ts).
 *
 *   npm run build && node bench/experiments/raw-frame-echo.mjs [size=48] [rounds=20000] [together|apart]
 *
 * Used in docs/benchmarks.md ("Separate runs"): not kept.
 */
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const { WebSocketServer } = await import(`${root}/node_modules/ws/wrapper.mjs`);
const { spawnClients } = await import(`${root}/dist/src/loadgen/client-processes.js`);
const { interleave } = await import(`${root}/dist/src/lib/interleave.js`);
const { allowedCpus, setProcessAffinity } = await import(`${root}/dist/src/lib/affinity.js`);
const SIZE = Number(process.argv[2] ?? 48);
const ROUNDS = Number(process.argv[3] ?? 20000);
const apart = process.argv[4] === 'apart';
if (SIZE > 125) throw new Error('a payload of at most 125 bytes (a two-byte header)');

async function open(mode) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  let conn = null;
  wss.on('connection', (ws) => (conn = ws));
  const child = await spawnClients(['echo', `ws://127.0.0.1:${wss.address().port}`, '1']);
  const ws = conn;
  const sock = ws._socket;
  let done = null;
  ws.on('message', () => done());
  const payload = new Uint8Array(SIZE).fill(7);
  const framed = Buffer.alloc(SIZE + 2, 7);
  framed[0] = 0x82; // FIN, binary
  framed[1] = SIZE;
  const send = mode === 'ws.send' ? () => ws.send(payload) : mode === 'raw' ? () => sock.write(framed) : () => sock.write(Buffer.from(framed));
  return {
    name: mode,
    child,
    close: () => (child.stdin.end(), ws.terminate(), wss.close()),
    round: () => {
      const t = process.hrtime.bigint();
      return new Promise((resolve) => {
        done = () => resolve(Number(process.hrtime.bigint() - t) / 1000);
        send();
      });
    },
  };
}

const subjects = [await open('ws.send'), await open('raw'), await open('raw, copied')];
const cpus = allowedCpus();
setProcessAffinity(process.pid, String(cpus[0]));
for (const s of subjects) setProcessAffinity(s.child.pid, String(apart ? cpus[1] : cpus[0]));
for (let i = 0; i < 3000; i++) for (const s of subjects) await s.round();
const res = await interleave(subjects, { rounds: ROUNDS, blocks: 10, reentry: 0, warm: 0, yieldEvery: 64, tick: () => new Promise((r) => setImmediate(r)), settle: async () => undefined });
for (const r of res) console.log(`${r.name.padEnd(12)} p50 ${r.lat.p50.toFixed(2)} us  p90 ${r.lat.p90.toFixed(2)} us  p50 / ws.send ${(r.lat.p50 / res[0].lat.p50).toFixed(3)}`);
for (const s of subjects) s.close();
process.exit(0);
