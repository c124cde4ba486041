/**
 * How many times this thread's synchronous code has resolved a promise that another task of the
 * same thread awaits (a lock handed to its next waiter, stopped queues resumed): the continuation
 * of such a task is a microtask, which runs only when this thread next yields.
 *
 * Why it is counted: a device worker answers invalidations in a synchronous loop that parks in
 * Atomics.wait, and a continuation still queued when it parks would wait for the next wake (at
 * most the park's timeout, 100 ms). The loop used to yield to microtasks before every park; that
 * one yield, on a core the other devices need, cost about 5 us of their fan-out per device (N = 16
 * dmirror workers sharing one CPU, bench:handshake --pin=all, 11-28: round p50 230 to 264 us with
 * the yield, 156 to 161 us without it, four runs each). Now it yields only when this count moved
 * since its last yield (workers/runtime/worker-host.ts). Against the build before, alternating
 * runs: 186 and 194 us against 244 and 246 us at N = 16 with --pin=all; unpinned, 182 and 191 us
 * against 205 and 216 us at N = 16, 479 and 492 us against 516 and 561 us at N = 32.
 * Every place where device code wakes an awaiting task synchronously calls noteWake.
 */
let wakes = 0;

/** Records that a promise another task awaits was just resolved. */
export function noteWake(): void {
  wakes++;
}

/** Wakes recorded by this thread so far. */
export function wakeCount(): number {
  return wakes;
}
