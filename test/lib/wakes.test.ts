/**
 * The wake count a device loop consults before it parks (src/lib/wakes.ts): a Mutex handing itself
 * to a waiter records a wake (the waiter resumes in a microtask), an uncontended unlock does not.
 */
import { describe, expect, it } from 'vitest';
import { Mutex } from '../../src/lib/locks.js';
import { noteWake, wakeCount } from '../../src/lib/wakes.js';

describe('wake count', () => {
  it('counts noteWake calls', () => {
    const w0 = wakeCount();
    noteWake();
    noteWake();
    expect(wakeCount()).toBe(w0 + 2);
  });

  it('moves when a Mutex is handed to a waiter, not on an uncontended lock and unlock', async () => {
    const m = new Mutex('t');
    const w0 = wakeCount();
    m.lock('a');
    m.unlock();
    expect(wakeCount()).toBe(w0);
    m.lock('a');
    let resumed = false;
    const waiter = Promise.resolve(m.lock('b')).then(() => {
      resumed = true;
    });
    m.unlock(); // hands the lock to b: its continuation is queued, not run
    expect(wakeCount()).toBe(w0 + 1);
    expect(resumed).toBe(false);
    expect(m.holder).toBe('b');
    await waiter;
    expect(resumed).toBe(true);
    m.unlock();
    expect(wakeCount()).toBe(w0 + 1);
  });
});
