import { describe, expect, it } from 'vitest';
import { ULONG_MAX, addrHi, addrLo, joinAddr } from '../../src/kernel/layout.js';

describe('address halves (mailbox call and end slots)', () => {
  const edges = [0, 1, 4095, 4096, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 4096, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 4096, 0x7f1234567000, 2 ** 47 - 4096, 2 ** 47, 2 ** 52, 2 ** 53 - 1];

  it('round-trips every address below 2^53 and ULONG_MAX', () => {
    let x = 0x2545f491;
    const random: number[] = [];
    for (let i = 0; i < 2000; i++) {
      // xorshift32, two draws per address: up to 2^53 - 1
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const hi = (x >>> 0) % 2 ** 21;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      random.push(hi * 2 ** 32 + (x >>> 0));
    }
    for (const a of [...edges, ...random]) {
      expect(joinAddr(addrLo(a), addrHi(a))).toBe(a);
    }
    expect(addrLo(ULONG_MAX)).toBe(-1);
    expect(addrHi(ULONG_MAX)).toBe(-1);
    expect(joinAddr(-1, -1)).toBe(ULONG_MAX);
  });

  it('the low half is the address modulo 2^32 as a signed word', () => {
    for (const a of edges) {
      expect(addrLo(a)).toBe((a % 2 ** 32) | 0);
      expect(addrLo(a) >>> 0).toBe(a % 2 ** 32);
    }
    expect(addrLo(2 ** 32 - 1)).toBe(-1); // all ones in the low word, yet not ULONG_MAX: the high word says which
    expect(addrHi(2 ** 32 - 1)).toBe(0);
  });
});
