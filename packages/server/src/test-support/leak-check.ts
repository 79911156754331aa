/**
 * Runs around every test file (vitest setupFiles): no container, network or volume labelled by
 * Mayfly that this test run made may remain. It asks the docker CLI, not the driver under test, so
 * the check is independent. Only this run's installations count (their instance ids start with the
 * run's name, see `testInstanceName`): a quick-start server or another test run on the same engine
 * creating and removing objects meanwhile causes no false failure.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, expect } from 'vitest';

const LABEL = 'label=mayfly.managed-by=mayfly';
const INSTANCE = '{{.Label "mayfly.instance"}}';

/** This run's labelled objects, as `kind id name`. */
export function labelledObjects(): string[] {
  const run = process.env.MAYFLY_TEST_RUN ?? '';
  const list = (args: string[], format: string) =>
    execFileSync('docker', [...args, '--filter', LABEL, '--format', `${INSTANCE}\t${format}`], {
      encoding: 'utf8',
    })
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split('\t'))
      .filter(([instance]) => run !== '' && (instance ?? '').startsWith(run))
      .map(([, rest]) => rest ?? '');
  return [
    ...list(['ps', '-a'], '{{.ID}} {{.Names}}').map((l) => `container ${l}`),
    ...list(['network', 'ls'], '{{.ID}} {{.Name}}').map((l) => `network ${l}`),
    ...list(['volume', 'ls'], '{{.Name}}').map((l) => `volume ${l}`),
  ];
}

// Objects that were there before (a previous file's, already reported) are not this file's.
let before = new Set<string>();
beforeAll(() => {
  before = new Set(labelledObjects());
});

afterAll(() => {
  const left = labelledObjects().filter((o) => !before.has(o));
  expect(left, 'Mayfly-labelled objects left behind by this test file').toEqual([]);
});
