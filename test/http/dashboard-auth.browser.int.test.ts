/**
 * The dashboard against a service whose API requires tokens (issue #8), in headless Chromium: the
 * page works once given a token (`/#token=` once, or the prompt it shows on a 401), sends it on
 * every call and on its event stream, keeps it out of the address bar, and shows only what the
 * token grants. Skipped without chromium (required under CI=true, as the other browser test).
 */
import { existsSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { Service } from '../../src/service.js';
import { buildServer } from '../../src/http/server.js';
import { loadScenario, startDemo, type Demo } from '../../src/demo.js';
import { PROT } from '../../src/kernel/kernel.js';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
if (!CHROMIUM && process.env.CI === 'true') throw new Error('chromium is required under CI=true (apt-get install chromium)');

const DASH = 'dash-token-1';
let svc: Service;
let app: FastifyInstance;
let demo: Demo;
let browser: Browser;
let url = '';

async function newPage(): Promise<{ page: Page; errors: string[] }> {
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return { page, errors };
}

const deviceNames = (page: Page): Promise<string[]> => page.$$eval('[data-testid=device]', (rows) => rows.map((r) => r.getAttribute('data-name') ?? '').sort());

describe.skipIf(!CHROMIUM)('dashboard with API tokens', () => {
  beforeAll(async () => {
    svc = new Service({ deadlineMs: 60_000, tokens: `${DASH}=demo;admin-token-1=*` });
    expect(svc.apiAuth).toBe(true);
    app = await buildServer(svc, { logger: false });
    await app.listen({ host: '127.0.0.1', port: 0 });
    await svc.start();
    const sc = loadScenario();
    sc.workload.periodMs = 3_600_000;
    demo = await startDemo(svc, sc);
    // A process and device the token does not grant: never shown.
    const other = svc.kernel.createProcess('hidden');
    await svc.kernel.mmap(other.pid, { length: 16 * 4096, prot: PROT.READ | PROT.WRITE, populate: true });
    await svc.devices.create({ kind: 'dmirror', pid: other.pid, name: 'hidden0' });
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

  it('given /#token= once: the granted devices, a munmap from the page streamed back, the token out of the address bar', async () => {
    const { page, errors } = await newPage();
    await page.goto(`${url}#token=${DASH}`);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=device]').length === 4, undefined, { timeout: 30_000 });
    expect(await deviceNames(page)).toEqual(['dmirror0', 'gpu0', 'nic0', 'vm0']);
    expect(page.url()).toBe(url);
    expect(await page.evaluate(() => localStorage.getItem('devmirror.token'))).toBe(DASH);
    await page.waitForFunction(() => document.querySelectorAll('#heat .cell').length > 0, undefined, { timeout: 30_000 });
    await page.fill('#off', '0');
    await page.fill('#cnt', '4');
    await page.click('#btn-munmap');
    await page.waitForSelector('#events tr[data-event=UNMAP]', { timeout: 30_000 });
    expect(svc.events.query({ limit: 100 }).items.some((e) => e.event === 'UNMAP' && e.pid === demo.pid)).toBe(true);
    expect(await page.textContent('#status')).toBe('live');
    // Only the granted process is offered.
    expect(await page.content()).not.toContain('hidden');
    // A reload keeps working from the stored token.
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=device]').length === 4, undefined, { timeout: 30_000 });
    expect(errors).toEqual([]);
  });

  it('without a token: the page asks for one, then works', async () => {
    const { page, errors } = await newPage();
    const asked: string[] = [];
    page.on('dialog', (d) => {
      asked.push(d.message());
      void d.accept(DASH);
    });
    await page.goto(url);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid=device]').length === 4, undefined, { timeout: 30_000 });
    expect(asked.length).toBeGreaterThanOrEqual(1);
    expect(asked[0]).toContain('requires an API token');
    expect(await deviceNames(page)).toEqual(['dmirror0', 'gpu0', 'nic0', 'vm0']);
    await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'live', undefined, { timeout: 30_000 });
    expect(errors).toEqual([]);
  });
});
