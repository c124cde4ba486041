import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Recorder, readRecord, RECORD_VERSION } from '../../src/soak/record.js';

const dir = mkdtempSync(join(tmpdir(), 'devmirror-record-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('soak record', () => {
  it('round-trips a header, operations, checks, problems and the summary', async () => {
    const path = join(dir, 'r.jsonl');
    const rec = new Recorder(path, 1);
    rec.write({ t: 'header', version: RECORD_VERSION, seed: 5, options: { durationMs: 1 }, startedAt: 'now', node: 'v20' });
    rec.write({ t: 'op', i: 0, ms: 0, op: { k: 'write', addr: 4096 } });
    rec.write({ t: 'inv', i: 0 });
    rec.write({ t: 'inv', i: 0 }); // beyond the cap of 1: counted, not written
    rec.write({ t: 'problem', i: 0, ms: 1, category: 'lost-write', detail: 'x' });
    rec.write({ t: 'check', i: 1, ms: 2, ok: false });
    rec.write({ t: 'summary', ok: false });
    expect(rec.droppedInvalidations).toBe(1);
    await rec.close();
    rec.write({ t: 'note' }); // after close: ignored, no throw
    const r = readRecord(path);
    expect(r.header.seed).toBe(5);
    expect(r.ops).toEqual([{ t: 'op', i: 0, ms: 0, op: { k: 'write', addr: 4096 } }]);
    expect(r.problems[0].category).toBe('lost-write');
    expect(r.checks[0].i).toBe(1);
    expect(r.summary).toEqual({ t: 'summary', ok: false });
  });

  it.each([
    ['missing', null, /cannot read/],
    ['empty', '', /empty record/],
    ['not JSON', '{"t":"header"\n', /not JSON/],
    ['no header', '{"t":"op","i":0,"ms":0,"op":{"k":"x"}}\n', /not a soak record header/],
    ['other version', `{"t":"header","version":${RECORD_VERSION + 1},"seed":1,"options":{}}\n`, /record format/],
    ['bad op', `{"t":"header","version":${RECORD_VERSION},"seed":1,"options":{}}\n{"t":"op","i":"x","op":{}}\n`, /bad operation line/],
  ])('refuses a %s file with DM_ERR_VALIDATION', (_name, text, msg) => {
    const path = join(dir, `bad-${_name}.jsonl`);
    if (text !== null) writeFileSync(path, text);
    expect(() => readRecord(path)).toThrow(msg as RegExp);
    try {
      readRecord(path);
    } catch (e) {
      expect((e as { code: string }).code).toBe('DM_ERR_VALIDATION');
    }
  });
});
