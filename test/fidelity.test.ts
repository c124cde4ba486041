/**
 * The fidelity manifest (src/fidelity.ts): complete (every event, origin, device kind and daemon has
 * an entry), and docs/fidelity.md is generated from it. UPDATE_FIDELITY=1 rewrites the file.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FIDELITY, fidelityMarkdown } from '../src/fidelity.js';
import { EVENT_NAMES, ORIGINS } from '../src/notifier/range.js';
import { DEVICE_KINDS } from '../src/devices/protocol.js';
import { DAEMON_NAMES } from '../src/kernel/activity/daemons.js';
import { Service } from '../src/service.js';
import { buildServer } from '../src/http/server.js';

const DOC = new URL('../docs/fidelity.md', import.meta.url);

describe('fidelity manifest', () => {
  it('has an entry for every event, origin, device kind and daemon', () => {
    const named = (kind: string) => new Set(FIDELITY.filter((i) => i.kind === kind).map((i) => i.name));
    expect(EVENT_NAMES.filter((e) => !named('event').has(e))).toEqual([]);
    expect(DEVICE_KINDS.filter((d) => !named('personality').has(d))).toEqual([]);
    const origins = new Set(FIDELITY.map((i) => i.origin));
    expect(ORIGINS.filter((o) => !origins.has(o))).toEqual([]);
    const daemons = new Set(FIDELITY.map((i) => i.daemon));
    expect(DAEMON_NAMES.filter((d) => !daemons.has(d))).toEqual([]);
    // One entry per origin, named by it, and no unknown names.
    for (const o of ORIGINS) expect(FIDELITY.filter((i) => i.origin === o).map((i) => i.name), o).toEqual([o]);
    expect(new Set(FIDELITY.map((i) => `${i.kind}:${i.name}`)).size).toBe(FIDELITY.length);
    for (const i of FIDELITY) {
      expect(i.how.length, i.name).toBeGreaterThan(20);
      expect(i.kernelVersion, i.name).toMatch(/\d/);
      if (i.fidelity === 'approximate') expect(i.how, `${i.name}: an approximation says how`).toMatch(/Differs|differs|but|not modelled|are not|never/);
    }
  });

  it('docs/fidelity.md is generated from src/fidelity.ts', () => {
    const want = fidelityMarkdown();
    if (process.env.UPDATE_FIDELITY) writeFileSync(DOC, want);
    expect(readFileSync(DOC, 'utf8'), 'docs/fidelity.md is stale: UPDATE_FIDELITY=1 npx vitest run test/fidelity.test.ts').toBe(want);
  });

  it('is served by GET /v1/fidelity, without a token', async () => {
    const svc = new Service({ tokens: 'fid-token=*' });
    const app = await buildServer(svc, { logger: false });
    try {
      const r = await app.inject({ method: 'GET', url: '/v1/fidelity' });
      expect(r.statusCode).toBe(200);
      const body = r.json();
      expect(body.markdown).toBe(fidelityMarkdown());
      expect(body.items).toHaveLength(FIDELITY.length);
      expect(body.items.find((i: { name: string }) => i.name === 'oom_reaper')).toMatchObject({ kind: 'activity', fidelity: 'exact' });
    } finally {
      await svc.stop();
      await app.close();
    }
  });
});
