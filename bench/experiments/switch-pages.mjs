/**
 * Experiment: what touching memory costs right after a process switch on one CPU, by pages against
 * by cache lines. This process and a child ping-pong one byte over a Unix socket, both on this
 * process's CPU (pin it with taskset); every round, before it writes, this process reads K bytes at
 * a stride of 0 (one line), 64 (K lines in K/64 pages), 4096 (K pages) or 4160 (K pages, a line
 * apart). The child touches POLLUTE bytes (one word every 64) before it answers, as a client process
 * with a working set of its own would. If a switch made page-table walks dear (a paravirtualized
 * guest's TLB flushed on every switch), the page strides would cost more than the line stride.
 * Prints the p50 round trip, in us, of six passes per stride.
 *
 *   taskset -c 0 node bench/experiments/switch-pages.mjs [K=64] [POLLUTE=0]
 *
 * Used in docs/benchmarks.md ("The codec's readers and writers").
 */
import { fork } from 'node:child_process';
import { unlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PATH = join(tmpdir(), `devmirror-switch-pages-${process.ppid}.sock`);
if (process.argv[2] === 'child') {
  const junk = new Float64Array(Number(process.argv[4] ?? 0) / 8);
  const s = net.connect(process.argv[3]);
  s.setNoDelay(true);
  s.on('data', (d) => {
    for (let i = 0; i < junk.length; i += 8) junk[i] += 1;
    s.write(d);
  });
} else {
  const K = Number(process.argv[2] ?? 64);
  const pollute = process.argv[3] ?? '0';
  try {
    unlinkSync(PATH);
  } catch {
    // none left over
  }
  const mem = new Uint8Array(64 << 20);
  for (let i = 0; i < mem.length; i += 4096) mem[i] = 1;
  const srv = net.createServer();
  await new Promise((r) => srv.listen(PATH, r));
  const child = fork(new URL(import.meta.url).pathname, ['child', PATH, pollute]);
  const sock = await new Promise((r) => srv.once('connection', r));
  sock.setNoDelay(true);
  let stride = 0;
  let resolve = () => {};
  let acc = 0;
  sock.on('data', () => resolve());
  const one = Buffer.from([1]);
  const round = () =>
    new Promise((r) => {
      resolve = r;
      for (let i = 0, p = 0; i < K; i++, p += stride) acc += mem[p];
      sock.write(one);
    });
  const p50 = {};
  for (let pass = 0; pass < 6; pass++) {
    for (const st of [0, 64, 4096, 4160]) {
      stride = st;
      const N = 20000;
      const lat = new Float64Array(N);
      for (let i = 0; i < 2000; i++) await round();
      for (let i = 0; i < N; i++) {
        const t = process.hrtime.bigint();
        await round();
        lat[i] = Number(process.hrtime.bigint() - t) / 1000;
      }
      lat.sort();
      (p50[st] ??= []).push(lat[N >> 1]);
    }
  }
  for (const [st, v] of Object.entries(p50)) console.log(`K=${K} pollute=${pollute} stride ${st.padStart(4)}: p50 us ${v.map((x) => x.toFixed(2)).join(' ')}`);
  child.kill();
  srv.close();
  process.exit(acc >= 0 ? 0 : 1);
}
