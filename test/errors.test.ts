import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DevmirrorError, ERROR_CODES, ERRORS } from '../src/errors.js';
import { ENV_VARS, loadConfig } from '../src/config.js';

const errorsDoc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
const configDoc = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8');

describe('error catalogue', () => {
  it('documents every code with its status', () => {
    for (const code of ERROR_CODES) {
      const row = errorsDoc.split('\n').find((l) => l.startsWith(`| \`${code}\` |`));
      expect(row, `docs/errors.md lacks ${code}`).toBeDefined();
      expect(row).toContain(`| ${ERRORS[code].status} |`);
    }
  });
  it('documents no code that does not exist', () => {
    const documented = [...errorsDoc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual([...ERROR_CODES].sort());
  });
  it('uses 4xx for every user-facing code and errno names for kernel refusals', () => {
    for (const code of ERROR_CODES) {
      const s = ERRORS[code].status;
      if (code.startsWith('DM_ERR_') && ['DM_ERR_CONFIG', 'DM_ERR_INTERNAL', 'DM_ERR_SUBSCRIBER_BUG', 'DM_ERR_LAYOUT_MISMATCH'].includes(code)) {
        expect(s).toBe(500);
      } else if (code === 'DM_ERR_UNREACHABLE') {
        expect(s).toBe(502); // raised by command-line clients about their upstream, never served
      } else {
        expect(s).toBeGreaterThanOrEqual(400);
        expect(s).toBeLessThan(500);
      }
    }
    const e = new DevmirrorError('EINVAL', 'x', { cpages: 3 });
    expect(e.toJSON()).toEqual({ code: 'EINVAL', message: 'x', cpages: 3 });
    expect(e.statusCode).toBe(422);
  });
});

describe('configuration', () => {
  it('documents every variable with its default', () => {
    for (const v of ENV_VARS) {
      const row = configDoc.split('\n').find((l) => l.startsWith(`| \`${v.name}\` |`));
      expect(row, `docs/configuration.md lacks ${v.name}`).toBeDefined();
    }
  });
  it('listens beyond loopback only with tokens', () => {
    expect(loadConfig({ HOST: '0.0.0.0', DEVMIRROR_TOKENS: 'compose-secret-1=*' }).host).toBe('0.0.0.0');
    expect(loadConfig({ HOST: '127.0.0.2' }).host).toBe('127.0.0.2');
    expect(loadConfig({ HOST: 'localhost' }).host).toBe('localhost');
  });
  it('has working defaults', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ host: '127.0.0.1', port: 8080, memoryBytes: 64 * 1024 * 1024, numaNodes: 2, thp: 'madvise' });
    expect(c.swapBytes).toBe(2 * c.memoryBytes);
  });
  it.each([
    [{ PORT: 'abc' }, /PORT must be an integer/],
    [{ PORT: '70000' }, /PORT must be between/],
    [{ DEVMIRROR_MEMORY_MB: '3' }, /between 4 and 4096|multiple of 2/],
    [{ DEVMIRROR_MEMORY_MB: '7' }, /multiple of 2/],
    [{ DEVMIRROR_THP: 'sometimes' }, /DEVMIRROR_THP/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL/],
    [{ DEVMIRROR_MEMROY_MB: '64' }, /unknown variable DEVMIRROR_MEMROY_MB/],
    [{ HOST: '0.0.0.0' }, /HOST=0.0.0.0 exposes the notifier channel.*DEVMIRROR_TOKENS/],
  ])('rejects %o with a clear message', (env, msg) => {
    expect(() => loadConfig(env)).toThrow(msg);
    try {
      loadConfig(env);
    } catch (e) {
      expect((e as DevmirrorError).code).toBe('DM_ERR_CONFIG');
    }
  });
});
