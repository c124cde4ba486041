/**
 * bench:channel's system at N = 1, for the experiments that drive it (channel-ab.mjs,
 * channel-cpu.mjs, floor-sharing.mjs, protocol-floor.mjs; round-tail.mjs and round-allocations.mjs
 * through openTogether): the service of the build at `root` (this checkout or a
 * patched copy of its build) with one DeviceClient process subscribed to a 16-page window, and its
 * round, a one-page CLEAR (Kernel.notify, then notifyEnd), as bench/channel.ts runs it.
 *
 * `pin(pid)` places the client process (each experiment pins it with the floors it compares).
 */
const PAGE = 4096;

/**
 * bench:channel's service without clients: the build at `root`, its HTTP server on an ephemeral
 * port, the process `bench` with a 16-page window at `a`; `url` is the channel's, `window` its length.
 */
export async function openChannelService(root) {
  const { Service } = await import(`${root}/dist/src/service.js`);
  const { buildServer } = await import(`${root}/dist/src/http/server.js`);
  const { PROT } = await import(`${root}/dist/src/kernel/kernel.js`);
  const svc = new Service({ kernel: { memoryBytes: 64 * 1024 * 1024 }, channel: { maxSubscriptions: 4096 }, deadlineMs: 60_000 });
  const app = await buildServer(svc, { logger: false });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const k = svc.kernel;
  const p = k.createProcess('bench');
  const a = await k.mmap(p.pid, { length: 16 * PAGE, prot: PROT.READ | PROT.WRITE });
  return { svc, app, k, p, a, window: 16 * PAGE, url: `ws://127.0.0.1:${app.server.address().port}/v1/notifier/ws` };
}

export async function openChannelSystem(root, pin) {
  const { MmuNotifierEvent } = await import(`${root}/dist/src/notifier/range.js`);
  const { startClientProcesses } = await import(`${root}/dist/src/loadgen/client-processes.js`);
  const { svc, app, k, p, a, window, url } = await openChannelService(root);
  const children = await startClientProcesses(url, 'devmirror-local', p.pid, a, window, 1);
  for (const c of children) pin(c.pid);
  return {
    pids: children.map((c) => c.pid),
    // As bench/channel.ts drives it (a reaction to the answer, as the protocol floor's round).
    round: () => {
      const done = (r) => void k.notifyEnd(p.mm, r);
      const r = k.notify(p.mm, MmuNotifierEvent.CLEAR, a, a + PAGE, 'madvise');
      return r instanceof Promise ? r.then(done) : Promise.resolve(done(r));
    },
    close: async () => {
      for (const c of children) c.stdin.end();
      await svc.stop();
      await app.close();
    },
  };
}

/**
 * One subject of bench:channel's N = 1 round with everything on this process's first CPU (the
 * `together` placement), warmed by `warm` rounds: `sys` (devmirror, openChannelSystem), `echo`
 * (the bare ws echo) or `proto` (the protocol floor, no End). Each has round(), pids and close().
 */
export async function openTogether(root, which, warm = 5000) {
  const { allowedCpus, setProcessAffinity } = await import(`${root}/dist/src/lib/affinity.js`);
  const { openFanoutFloor, openProtocolFloor } = await import(`${root}/dist/src/loadgen/client-processes.js`);
  const cpu = String(allowedCpus()[0]);
  setProcessAffinity(process.pid, cpu);
  const pin = (pid) => setProcessAffinity(pid, cpu);
  let subject;
  if (which === 'sys') subject = await openChannelSystem(root, pin);
  else if (which === 'echo') subject = await openFanoutFloor(48, 1);
  else if (which === 'proto') subject = await openProtocolFloor({ end: false });
  else throw new Error(`openTogether: sys, echo or proto, got ${JSON.stringify(which)}`);
  if (which !== 'sys') for (const pid of subject.pids) pin(pid);
  for (let i = 0; i < warm; i++) await subject.round();
  return subject;
}

/**
 * Passes of `rounds` rounds of each subject (name -> round function) in turn, the order reversed
 * every other pass so that no subject always follows the same one; `yieldEvery` rounds the event
 * loop turns (0: never). Returns each subject's p50 per pass, in microseconds.
 */
export async function alternatingP50(subjects, passes, rounds, yieldEvery = 0) {
  const names = Object.keys(subjects);
  const p50 = Object.fromEntries(names.map((n) => [n, []]));
  for (let pass = 0; pass < passes; pass++) {
    for (const n of pass % 2 ? [...names].reverse() : names) {
      const lat = new Float64Array(rounds);
      for (let i = 0; i < rounds; i++) {
        const t = process.hrtime.bigint();
        await subjects[n]();
        lat[i] = Number(process.hrtime.bigint() - t) / 1000;
        if (yieldEvery > 0 && i % yieldEvery === yieldEvery - 1) await new Promise((r) => setImmediate(r));
      }
      lat.sort();
      p50[n].push(lat[rounds >> 1]);
    }
  }
  return p50;
}

/** One line per subject: its p50 per pass and, but for `ref`, its ratio to ref's of the same pass. */
export function printRatios(p50, ref) {
  for (const n of Object.keys(p50)) {
    const ratios = n === ref ? '' : `   /${ref} ${p50[n].map((x, i) => (x / p50[ref][i]).toFixed(2)).join(' ')}`;
    console.log(`${n.padEnd(9)} p50 ${p50[n].map((x) => x.toFixed(1)).join(' ')}${ratios}`);
  }
}
