import { describe, expect, it } from 'vitest';
import { DEFAULT_TOKEN, TokenTable } from '../../src/channel/tokens.js';

describe('channel tokens', () => {
  it('defaults to the local token for every process, flagged as the default', () => {
    const t = TokenTable.parse(undefined);
    expect(t.usingDefault).toBe(true);
    const g = t.check(DEFAULT_TOKEN)!;
    expect(TokenTable.allows(g, { pid: 7, name: 'x' })).toBe(true);
    expect(t.check('devmirror-locaL')).toBeNull();
  });

  it('grants pids and names per token, and nothing else', () => {
    const t = TokenTable.parse('gpu-token-1=demo,42; all-token-1=*');
    expect(t.usingDefault).toBe(false);
    const g = t.check('gpu-token-1')!;
    expect(TokenTable.allows(g, { pid: 42, name: 'x' })).toBe(true);
    expect(TokenTable.allows(g, { pid: 7, name: 'demo' })).toBe(true);
    expect(TokenTable.allows(g, { pid: 7, name: 'other' })).toBe(false);
    expect(TokenTable.allows(t.check('all-token-1')!, { pid: 1, name: 'any' })).toBe(true);
    expect(t.check(DEFAULT_TOKEN)).toBeNull();
    expect(t.check('')).toBeNull();
  });

  it('rejects bad specifications with DM_ERR_CONFIG', () => {
    expect(() => TokenTable.parse('short=*')).toThrow(expect.objectContaining({ code: 'DM_ERR_CONFIG' }));
    expect(() => TokenTable.parse('long-enough-token')).toThrow(expect.objectContaining({ code: 'DM_ERR_CONFIG' }));
    expect(() => TokenTable.parse(';;')).toThrow(expect.objectContaining({ code: 'DM_ERR_CONFIG' }));
  });
});
