/**
 * Runs after every test file (vitest setupFiles): no container, network or volume labelled by
 * Mayfly may remain. It asks the docker CLI, not the driver under test, so the check is independent.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, expect } from 'vitest';

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

afterAll(() => {
  expect(labelledObjects(), 'Mayfly-labelled objects left behind by this test file').toEqual([]);
});
