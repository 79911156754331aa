/**
 * Runs around every test file (vitest setupFiles): no container, network or volume labelled by
 * Mayfly that the file made may remain. It asks the docker CLI, not the driver under test, so the check is independent.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, expect } from 'vitest';

const LABEL = 'label=mayfly.managed-by=mayfly';

export function labelledObjects(): string[] {
  const list = (args: string[], format: string) =>
    execFileSync('docker', [...args, '--filter', LABEL, '--format', format], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
  return [
    ...list(['ps', '-a'], '{{.ID}} {{.Names}}').map((l) => `container ${l}`),
    ...list(['network', 'ls'], '{{.ID}} {{.Name}}').map((l) => `network ${l}`),
    ...execFileSync('docker', ['volume', 'ls', '-q', '--filter', LABEL], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((l) => `volume ${l}`),
  ];
}

// Objects that were there before (another installation on this engine, say a quick-start
// server) are not this file's; everything else labelled must be gone by the end.
let before = new Set<string>();
beforeAll(() => {
  before = new Set(labelledObjects());
});

afterAll(() => {
  const left = labelledObjects().filter((o) => !before.has(o));
  expect(left, 'Mayfly-labelled objects left behind by this test file').toEqual([]);
});
