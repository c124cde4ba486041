import { describe, expect, it } from 'vitest';
import { checkScenario, scenarioToRaw } from '../../src/explore/scenario.js';
import { DevmirrorError } from '../../src/errors.js';

const base = { mappings: [{ name: 'buf', pages: 2 }], devices: [{ name: 'gpu0', kind: 'gpu' }], threads: { t: [{ op: 'dma', device: 'gpu0', map: 'buf' }] } };

describe('explorer scenarios', () => {
  it('fills in defaults and round-trips through its file form', () => {
    const sc = checkScenario(base);
    expect(sc.processes).toEqual(['app']);
    expect(sc.mappings[0]).toMatchObject({ process: 'app', prot: ['read', 'write'], populate: true });
    expect(sc.devices[0]).toMatchObject({ window: 'buf', policy: 'faithful', bug: null, transferUs: 1 });
    expect(checkScenario(scenarioToRaw(sc))).toEqual(sc);
  });

  it.each([
    [{ ...base, threads: { t: [{ op: 'teleport' }] } }, /op must be one of/],
    [{ ...base, threads: { t: [{ op: 'dma', device: 'nope', map: 'buf' }] } }, /no device "nope"/],
    [{ ...base, threads: { t: [{ op: 'munmap' }] } }, /munmap needs map/],
    [{ ...base, devices: [{ name: 'g', kind: 'gpu', bug: 'ignore-event:NOPE' }] }, /is not a bug mode/],
    [{ ...base, mappings: [] }, /mappings must be a non-empty list/],
    [{ ...base, threads: {} }, /threads must map/],
    [{ ...base, extra: 1 }, /unknown key "extra"/],
    [{ ...base, threads: { t: [{ op: 'store', map: 'buf', value: 300 }] } }, /value must be an integer/],
  ])('refuses %j with DM_ERR_VALIDATION', (raw, msg) => {
    let err: unknown;
    try {
      checkScenario(raw);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DevmirrorError);
    expect((err as DevmirrorError).code).toBe('DM_ERR_VALIDATION');
    expect((err as Error).message).toMatch(msg);
  });
});
