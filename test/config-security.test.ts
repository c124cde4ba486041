/**
 * The security-relevant configuration (issue #8): the service binds to loopback unless told
 * otherwise, needs tokens to listen beyond it, and its HTTP API asks for tokens whenever there are
 * tokens (DEVMIRROR_API_AUTH=auto), never left open on a non-loopback address.
 */
import { describe, expect, it } from 'vitest';
import { ENV_VARS, loadConfig } from '../src/config.js';
import type { DevmirrorError } from '../src/errors.js';

const TOKENS = 'compose-secret-1=demo';

function refused(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (e) {
    expect((e as DevmirrorError).code).toBe('DM_ERR_CONFIG');
    return (e as Error).message;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('configuration: where and how the service listens', () => {
  it('binds to 127.0.0.1 with an empty environment, with no token asked on the API (the embedded local default)', () => {
    const c = loadConfig({});
    expect(c.host).toBe('127.0.0.1');
    expect(c.tokens).toBeUndefined();
    expect(c.apiAuth).toBe(false);
    expect(ENV_VARS.find((v) => v.name === 'HOST')?.default).toBe('127.0.0.1');
    expect(ENV_VARS.find((v) => v.name === 'DEVMIRROR_API_AUTH')?.default).toBe('auto');
  });

  it('DEVMIRROR_API_AUTH=auto is on exactly when DEVMIRROR_TOKENS is set', () => {
    expect(loadConfig({ DEVMIRROR_TOKENS: TOKENS }).apiAuth).toBe(true);
    expect(loadConfig({ DEVMIRROR_TOKENS: TOKENS, DEVMIRROR_API_AUTH: 'auto' }).apiAuth).toBe(true);
    expect(loadConfig({ DEVMIRROR_TOKENS: '  ' }).apiAuth).toBe(false);
    expect(loadConfig({ HOST: '0.0.0.0', DEVMIRROR_TOKENS: TOKENS }).apiAuth).toBe(true);
  });

  it('on and off are honoured on loopback', () => {
    expect(loadConfig({ DEVMIRROR_API_AUTH: 'on' }).apiAuth).toBe(true);
    expect(loadConfig({ DEVMIRROR_API_AUTH: 'off', DEVMIRROR_TOKENS: TOKENS }).apiAuth).toBe(false);
    expect(loadConfig({ DEVMIRROR_API_AUTH: 'off', HOST: '127.0.0.5', DEVMIRROR_TOKENS: TOKENS }).apiAuth).toBe(false);
  });

  it('refuses off on an address others can reach, an unknown mode, and a non-loopback HOST without tokens', () => {
    expect(refused({ DEVMIRROR_API_AUTH: 'off', HOST: '0.0.0.0', DEVMIRROR_TOKENS: TOKENS })).toMatch(/DEVMIRROR_API_AUTH=off with HOST=0.0.0.0/);
    expect(refused({ DEVMIRROR_API_AUTH: 'off', HOST: '192.168.1.10', DEVMIRROR_TOKENS: TOKENS })).toMatch(/loopback/);
    expect(refused({ DEVMIRROR_API_AUTH: 'maybe' })).toMatch(/DEVMIRROR_API_AUTH must be auto, on or off/);
    expect(refused({ HOST: '0.0.0.0', DEVMIRROR_API_AUTH: 'on' })).toMatch(/DEVMIRROR_TOKENS/);
  });
});
