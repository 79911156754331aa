/**
 * `.dockerignore` matching: the same answers as @balena/dockerignore (Docker's rules ported to
 * JavaScript) on many generated patterns, without its backtracking blow-up on hostile ones.
 */
import balena from '@balena/dockerignore';
import { describe, expect, it } from 'vitest';
import { DockerignoreError, parseDockerignore } from './dockerignore.js';

/** A small deterministic generator, so a failure can be reproduced. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    return state / 0x7fffffff;
  };
}

const pick = <T>(next: () => number, items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;

describe('dockerignore rules', () => {
  it('answers as @balena/dockerignore does on generated patterns and paths', () => {
    const next = random(42);
    const patternParts = [
      'a',
      'b',
      'ab',
      '.',
      '..',
      '*',
      '**',
      '?',
      '[ab]',
      '[^a]',
      '[a-c]',
      '*.x',
      'a*',
      '\\*',
      ' ',
      '',
    ];
    const pathParts = ['a', 'b', 'ab', 'ba', '.x', 'a.x', 'c', '*', 'abc'];
    let compared = 0;
    let ignored = 0;
    for (let round = 0; round < 400; round++) {
      const lines: string[] = [];
      for (let l = 0; l < 1 + Math.floor(next() * 4); l++) {
        const parts = Array.from({ length: 1 + Math.floor(next() * 4) }, () => pick(next, patternParts));
        const prefix = pick(next, ['', '', '!', '/', './', '# ', ' ']);
        lines.push(prefix + parts.join(pick(next, ['/', '/', '', '//'])) + pick(next, ['', '', '/']));
      }
      const ours = parseDockerignore(lines.join('\n'));
      const theirs = balena.default({ ignorecase: false }).add(lines);
      for (let p = 0; p < 25; p++) {
        const file = Array.from({ length: 1 + Math.floor(next() * 4) }, () => pick(next, pathParts)).join(
          '/',
        );
        const expected = theirs.ignores(file);
        expect(ours.ignores(file), `${JSON.stringify(lines)} on ${file}`).toBe(expected);
        compared += 1;
        if (expected) ignored += 1;
      }
    }
    expect(compared).toBe(10_000);
    // Both answers occur often enough for the comparison to mean something.
    expect(ignored).toBeGreaterThan(1_000);
    expect(ignored).toBeLessThan(9_000);
  });

  it('follows Docker on the documented examples', () => {
    const rules = parseDockerignore(
      ['# comment', '*/temp*', '*/*/temp*', 'temp?', '*.md', '!README.md', '**/*.go', 'docs/**'].join('\n'),
    );
    expect(rules.ignores('somedir/temporary.txt')).toBe(true);
    expect(rules.ignores('somedir/temp/x')).toBe(true);
    expect(rules.ignores('somedir/subdir/temporary.txt')).toBe(true);
    expect(rules.ignores('tempa')).toBe(true);
    expect(rules.ignores('temporary')).toBe(false);
    expect(rules.ignores('CHANGES.md')).toBe(true);
    expect(rules.ignores('README.md')).toBe(false);
    expect(rules.ignores('sub/README.md')).toBe(false);
    expect(rules.ignores('a/b/c.go')).toBe(true);
    expect(rules.ignores('docs/a/b')).toBe(true);
    expect(rules.ignores('# comment')).toBe(false);
  });

  it('stays fast on patterns that make a backtracking matcher take minutes', () => {
    // With @balena/dockerignore, eight `**` take seconds on this path, twelve several minutes.
    const hostile = `${Array(40).fill('**').join('/')}/x`;
    const rules = parseDockerignore([hostile, `${'*a'.repeat(30)}*b`].join('\n'));
    const started = performance.now();
    expect(rules.ignores(`${Array.from({ length: 30 }, (_, i) => `d${i}`).join('/')}/y`)).toBe(false);
    expect(rules.ignores('a'.repeat(200))).toBe(false);
    expect(performance.now() - started).toBeLessThan(500);
  });

  it('refuses malformed patterns and ones too costly to evaluate, rather than stalling', () => {
    expect(() => parseDockerignore('ok\n[abc')).toThrow(/line 2: bad pattern "\[abc" \(unterminated/);
    expect(() => parseDockerignore('[]a]')).toThrow(DockerignoreError);
    expect(() => parseDockerignore('x'.repeat(5000))).toThrow(/longer than 4096/);
    const costly = parseDockerignore(
      Array(60)
        .fill(`${'**/'.repeat(1000)}x`)
        .join('\n'),
    );
    expect(() => costly.ignores(`${'d/'.repeat(100)}y`)).toThrow(/too complex/);
  });

  it('tells when an excluded folder must still be walked, as the docker CLI decides', () => {
    const rules = parseDockerignore('node_modules\n!node_modules/keep\nvendor\n!**/*.go\n');
    expect(rules.mayReincludeBelow('node_modules')).toBe(true);
    expect(rules.mayReincludeBelow('node_modules/other')).toBe(false);
    expect(rules.mayReincludeBelow('vendor')).toBe(false);
    rules.keep('vendor/Dockerfile');
    expect(rules.mayReincludeBelow('vendor')).toBe(true);
    expect(rules.ignores('vendor/Dockerfile')).toBe(false);
  });
});
