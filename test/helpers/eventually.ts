/**
 * Polls `check` until it stops throwing (or returns true), for work that completes asynchronously
 * in a device worker (deferred splits, end-side re-reads). The deadline is generous: it only bounds
 * a hang on a slow, shared machine; the assertion inside `check` is what the test checks.
 */
export async function eventually(check: () => unknown | Promise<unknown>, timeoutMs = 10_000, everyMs = 10): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await check();
      if (r !== false) return;
      if (Date.now() > until) throw new Error('condition still false at the deadline');
    } catch (e) {
      if (Date.now() > until) throw e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
