/**
 * The live dashboard in real headless Chromium (Debian's chromium, driven by playwright-core): it
 * shows the demo's four devices, a munmap triggered from the page appears as UNMAP in the stream,
 * and the device counters change. Saves a screenshot to test-artifacts/dashboard.png.
 * Under CI=true a missing chromium fails the test (.ci/run installs it); elsewhere it is skipped.
 */
import { existsSync, mkdirSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { loadScenario, startDemo, type Demo } from '../../src/demo.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
if (!CHROMIUM && process.env.CI === 'true') throw new Error('chromium is required under CI=true (apt-get install chromium)');

let svc: Service;
let app: FastifyInstance;
let demo: Demo;
let browser: Browser;
let url = '';

describe.skipIf(!CHROMIUM)('dashboard in a real browser', () => {
  beforeAll(async () => {
    svc = new Service({ deadlineMs: 60_000 });
    app = await buildServer(svc, { logger: false });
    await app.listen({ host: '127.0.0.1', port: 0 });
    await svc.start();
    const sc = loadScenario();
    sc.workload.periodMs = 3_600_000; // no background steps: the only syscalls are the test's
    demo = await startDemo(svc, sc);
    url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}/`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    demo?.stop();
    await svc?.stop();
    await app?.close();
  });

  it('shows the four devices, streams the UNMAP of a munmap clicked on the page, and updates the counters', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=device]').length === 4, undefined, { timeout: 30_000 });
    const names = await page.$$eval('[data-testid=device]', (rows) => rows.map((r) => r.getAttribute('data-name')).sort());
    expect(names).toEqual(['dmirror0', 'gpu0', 'nic0', 'vm0']);
    await page.waitForFunction(() => document.querySelectorAll('#heat .cell').length > 0, undefined, { timeout: 30_000 });
    const total = async () =>
      page.$$eval('[data-testid=invalidations]', (cells) => cells.reduce((a, c) => a + Number(c.textContent), 0));
    const before = await total();
    // The default selection is the demo process and its first mapping; unmap its first 4 pages.
    await page.fill('#off', '0');
    await page.fill('#cnt', '4');
    await page.click('#btn-munmap');
    await page.waitForSelector('#events tr[data-event=UNMAP]', { timeout: 30_000 });
    await page.waitForFunction((b) => [...document.querySelectorAll('[data-testid=invalidations]')].reduce((a, c) => a + Number(c.textContent), 0) > b, before, { timeout: 30_000 });
    expect(await total()).toBeGreaterThan(before);
    expect(svc.events.query({ limit: 100 }).items.some((e) => e.event === 'UNMAP' && e.pid === demo.pid)).toBe(true);
    // Provenance: filtering on the munmap origin leaves only its rows.
    await page.selectOption('#evorigin', 'munmap');
    const origins = await page.$$eval('#events tbody tr td:nth-child(5)', (cells) => cells.map((c) => c.textContent));
    expect(origins.length).toBeGreaterThan(0);
    expect(new Set(origins)).toEqual(new Set(['munmap']));
    expect(await page.textContent('#evorigins')).toMatch(/munmap \d+/);
    // The progress panel answers (no token needed on loopback without DEVMIRROR_TOKENS).
    await page.waitForFunction(() => /none \(watchdog|finding|waiting now/.test(document.querySelector('#progress')?.textContent ?? ''), undefined, { timeout: 30_000 });
    mkdirSync('test-artifacts', { recursive: true });
    await page.screenshot({ path: 'test-artifacts/dashboard.png', fullPage: true });
    expect(errors).toEqual([]);
  });
});
