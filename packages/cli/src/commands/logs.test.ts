import { describe, expect, it } from 'vitest';
import { UsageError } from '../cli-error.js';
import { jsonLine, parseTail } from './logs.js';

describe('logs --json lines', () => {
  it('splits the service from the prefix, padded or not (as the server pads it)', () => {
    expect(jsonLine('web    | GET / 200', undefined)).toEqual({ service: 'web', line: 'GET / 200' });
    expect(jsonLine('ticker | tick 1', undefined)).toEqual({ service: 'ticker', line: 'tick 1' });
    // Only the first separator counts: the rest is the line, whatever it holds.
    expect(jsonLine('web | a | b ', undefined)).toEqual({ service: 'web', line: 'a | b ' });
    expect(jsonLine('web |  indented', undefined)).toEqual({ service: 'web', line: ' indented' });
    expect(jsonLine('web | ', undefined)).toEqual({ service: 'web', line: '' });
  });

  it('a line that does not have the prefix keeps service null', () => {
    for (const line of ['no prefix', '| x', ' web | x', 'web| x', 'we b | x', '']) {
      expect(jsonLine(line, undefined)).toEqual({ service: null, line });
    }
  });

  it('with one service asked for, lines are not parsed', () => {
    expect(jsonLine('db | looks prefixed', 'web')).toEqual({ service: 'web', line: 'db | looks prefixed' });
  });

  it('stays linear on a long hostile line', () => {
    const line = `${'a'.repeat(64 * 1024)}${' '.repeat(64 * 1024)}x`;
    const start = performance.now();
    expect(jsonLine(line, undefined).service).toBeNull();
    expect(performance.now() - start).toBeLessThan(200);
  });
});

describe('logs --tail', () => {
  it('takes a whole number ≥ 0 or "all"', () => {
    expect(parseTail(undefined)).toBeUndefined();
    expect(parseTail('0')).toBe(0);
    expect(parseTail('25')).toBe(25);
    expect(parseTail('all')).toBe('all');
  });

  it('refuses anything else as a usage error', () => {
    for (const text of ['-1', '1.5', '1e3', '0x10', ' 5', '5 ', '', 'ALL', 'Infinity', '9999999999']) {
      expect(() => parseTail(text), text).toThrow(UsageError);
    }
  });
});
