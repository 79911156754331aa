// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these tests are about literal ${VAR} references
import { describe, expect, test } from 'vitest';
import { interpolate } from './interpolate.js';

const vars: Record<string, string> = { NAME: 'web', EMPTY: '', PORT: '8080' };
const lookup = (name: string) => (Object.hasOwn(vars, name) ? vars[name] : undefined);

describe('interpolate', () => {
  test.each([
    ['no references', 'no references'],
    ['${NAME}', 'web'],
    ['$NAME-$PORT', 'web-8080'],
    ['http://${NAME}:${PORT}/', 'http://web:8080/'],
    ['${MISSING:-fallback}', 'fallback'],
    ['${EMPTY:-fallback}', 'fallback'],
    ['${EMPTY-fallback}', ''],
    ['${MISSING-fallback}', 'fallback'],
    ['${NAME:-fallback}', 'web'],
    ['${NAME:+set}', 'set'],
    ['${EMPTY:+set}', ''],
    ['${EMPTY+set}', 'set'],
    ['${MISSING+set}', ''],
    ['${MISSING:-${NAME}-${PORT}}', 'web-8080'],
    ['${MISSING:-}', ''],
    ['$${NAME} and $$NAME', '${NAME} and $NAME'],
    ['costs $5, 100% $', 'costs $5, 100% $'],
    ['${NAME:?needed}', 'web'],
  ])('%s → %s', (text, value) => {
    expect(interpolate(text, lookup)).toEqual({ value, errors: [], warnings: [] });
  });

  test.each([
    [
      '${MISSING:?set it in the PR}',
      { message: '"MISSING" is not set: set it in the PR', index: 0, length: 28 },
    ],
    ['${EMPTY:?}', { message: '"EMPTY" is required but empty', index: 0, length: 10 }],
    ['${MISSING?}', { message: '"MISSING" is required but not set', index: 0, length: 11 }],
    ['a ${NAME', { message: 'unterminated "${": add the closing "}"', index: 2, length: 6 }],
    ['${1BAD}', { message: 'invalid variable reference "${1BAD}"', index: 0, length: 7 }],
    ['${A B}', { message: 'invalid variable reference "${A B}"', index: 0, length: 6 }],
  ])('%s fails', (text, error) => {
    expect(interpolate(text, lookup).errors).toEqual([error]);
  });

  const unset = (name: string) =>
    `"${name}" is not set, so it is empty: pass it with --input or in the environment, or give a default like \${${name}:-value}`;

  test.each([
    ['image: ${TAG}', 'image: ', { message: unset('TAG'), index: 7, length: 6, name: 'TAG' }],
    ['x $TAG', 'x ', { message: unset('TAG'), index: 2, length: 4, name: 'TAG' }],
    ['${MISSING:-${ALSO}}', '', { message: unset('ALSO'), index: 11, length: 7, name: 'ALSO' }],
  ])('%s: unset is empty, with a warning (as Compose)', (text, value, warning) => {
    expect(interpolate(text, lookup)).toEqual({ value, errors: [], warnings: [warning] });
  });

  test('warns once per unset variable of a value, for each of them', () => {
    const { warnings } = interpolate('${A}/${B}/$A', lookup);
    expect(warnings.map((w) => [w.name, w.index])).toEqual([
      ['A', 0],
      ['B', 5],
    ]);
  });

  test('tells the lookup where each reference starts, defaults included', () => {
    const seen: [string, number][] = [];
    interpolate('a $NAME ${MISSING:-${PORT}} $$X', (name, index) => {
      seen.push([name, index]);
      return lookup(name);
    });
    expect(seen).toEqual([
      ['NAME', 2],
      ['MISSING', 8],
      ['PORT', 19],
    ]);
  });

  test('a default nested too deep is an error, not a stack overflow', () => {
    const text = `\${A:-${'${A:-'.repeat(99_999)}x${'}'.repeat(100_000)}`;
    const { errors } = interpolate(text, () => undefined);
    expect(errors).toEqual([
      {
        message: 'references nested more than 32 deep in defaults',
        index: 32 * 5,
        length: expect.any(Number),
      },
    ]);
  });

  test('a result longer than the limit is an error', () => {
    expect(interpolate('${A}${A}${A}', () => 'xxxx', { maxLength: 10 }).errors).toEqual([
      { message: 'the value is longer than 10 characters once interpolated', index: 8, length: 1 },
    ]);
  });

  test('keeps 20 errors per value, then says there are more', () => {
    const { errors } = interpolate('${1X} '.repeat(1000), () => undefined);
    expect(errors).toHaveLength(21);
    expect(errors[20]).toEqual({
      message: 'more problems in this value are not listed',
      index: 120,
      length: 5,
    });
  });

  test('a braced reference ends at its own closing brace, whatever nests inside', () => {
    // Only `${` opens: a lone `{` does not, and `$${` is a `$` and a `{`.
    expect(interpolate('${MISSING:-{a}}b}', lookup)).toEqual({ value: '{a}b}', errors: [], warnings: [] });
    expect(interpolate('${MISSING:-$${NAME}}', lookup)).toEqual({
      value: '${NAME}',
      errors: [],
      warnings: [],
    });
    expect(interpolate('${MISSING:-${NAME}', lookup).errors[0]).toMatchObject({
      message: expect.stringMatching(/unterminated/),
      index: 0,
    });
  });
});
