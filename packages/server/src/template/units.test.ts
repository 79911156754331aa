import { describe, expect, test } from 'vitest';
import { parseMemorySize, parseShortDuration, splitShellWords } from './units.js';

describe('parseMemorySize', () => {
  test.each([
    ['256Mi', 256 * 2 ** 20],
    ['512M', 512 * 2 ** 20],
    ['512m', 512 * 2 ** 20],
    ['1g', 2 ** 30],
    ['1GiB', 2 ** 30],
    ['1.5g', 1.5 * 2 ** 30],
    ['100kb', 100 * 1024],
    ['1048576', 1048576],
    ['64b', 64],
    [4096, 4096],
  ])('%s → %d bytes', (input, bytes) => {
    expect(parseMemorySize(input)).toBe(bytes);
  });

  test.each(['', 'abc', '12Q', '1i', '0', '-5M', '1.5', 1.5, 0])('rejects %j', (input) => {
    expect(parseMemorySize(input)).toBeNull();
  });
});

describe('parseShortDuration', () => {
  test.each([
    ['500ms', 500],
    ['10s', 10_000],
    ['1m30s', 90_000],
    ['1.5h', 5_400_000],
    ['2h45m', 9_900_000],
    ['0', 0],
    ['0s', 0],
  ])('%s → %d ms', (input, ms) => {
    expect(parseShortDuration(input)).toBe(ms);
  });

  test.each(['', '10', '2x', '1d', 's', '1m 30s'])('rejects %j', (input) => {
    expect(parseShortDuration(input)).toBeNull();
  });
});

describe('splitShellWords', () => {
  test.each([
    ['node server.js --port 8080', ['node', 'server.js', '--port', '8080']],
    ['  spaced   out  ', ['spaced', 'out']],
    [`sh -c 'echo "$HOME" && exit 1'`, ['sh', '-c', 'echo "$HOME" && exit 1']],
    [`echo "a \\"quoted\\" word" b\\ c`, ['echo', 'a "quoted" word', 'b c']],
    [`empty '' ""`, ['empty', '', '']],
    [`con'cat'"enated"`, ['concatenated']],
    ['', []],
  ])('%s', (input, words) => {
    expect(splitShellWords(input)).toEqual({ words });
  });

  test.each([
    [`echo 'open`, 'unterminated single quote'],
    [`echo "open`, 'unterminated double quote'],
    ['echo \\', 'trailing backslash'],
  ])('%s fails', (input, error) => {
    expect(splitShellWords(input)).toEqual({ error });
  });
});
