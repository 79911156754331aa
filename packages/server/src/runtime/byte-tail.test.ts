import { describe, expect, it } from 'vitest';
import { ByteTail, clipMiddle } from './byte-tail.js';

describe('ByteTail', () => {
  it('keeps the last `limit` bytes of any sequence of pushes, in at most twice that much memory', () => {
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (const limit of [0, 1, 5, 64, 1000]) {
      for (let round = 0; round < 50; round++) {
        const tail = new ByteTail(limit);
        const all: Buffer[] = [];
        const pushes = random(40);
        for (let i = 0; i < pushes; i++) {
          const chunk = Buffer.alloc(random(3 * limit + 3), 0);
          for (let j = 0; j < chunk.length; j++) chunk[j] = random(256);
          all.push(chunk);
          tail.push(chunk);
          expect((tail as unknown as { buf: Buffer }).buf.length).toBeLessThanOrEqual(2 * limit);
        }
        const whole = Buffer.concat(all);
        expect(tail.bytes()).toEqual(whole.subarray(Math.max(0, whole.length - limit)));
        expect(tail.total).toBe(whole.length);
        expect(tail.truncated).toBe(whole.length > limit);
      }
    }
  });

  it('starts its text at a whole character when the cut fell inside one', () => {
    const tail = new ByteTail(4);
    tail.push('aé€'); // 1 + 2 + 3 bytes: the last 4 start inside é
    expect(tail.truncated).toBe(true);
    expect(tail.text()).toBe('€');
    const whole = new ByteTail(16);
    whole.push('é€');
    expect(whole.text()).toBe('é€');
  });

  it('clipMiddle keeps the start and the end of a long text', () => {
    expect(clipMiddle('short', 100)).toBe('short');
    const clipped = clipMiddle(`${'a'.repeat(5000)}middle${'z'.repeat(5000)}`, 100);
    expect(clipped).toMatch(/^a{50}… \[9906 bytes left out\] …z{50}$/);
  });
});
