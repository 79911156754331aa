/**
 * What a user does with the example through the CLI, whatever the server runs environments on:
 * `up` builds and starts the shop, its URL shows the rows seeded into PostgreSQL, `get`, `ls` and
 * `logs` show it, a second environment starts with a clone of the seeded database, `destroy`
 * leaves nothing (`leftOf` lists what remains of an environment), `snapshot rm` removes the seed's
 * snapshot.
 */
import type { Environment, Snapshot } from '@mayfly/contract';
import { expect } from 'vitest';
import { requestViaGateway } from '../../../server/src/test-support/test-server.js';

export const SEEDED = [
  'Mayfly Coffee Mug',
  'Ephemeral T-Shirt',
  'Sticker Pack',
  'Preview Cap',
  'Throwaway Notebook',
];

/** Removes every snapshot the server keeps: what a round trip that failed midway left. */
export async function removeSnapshots(
  cli: (args: string[]) => Promise<{ stdout: string; stderr: string }>,
): Promise<void> {
  const snapshots = JSON.parse((await cli(['snapshot', 'ls', '--json'])).stdout) as Snapshot[];
  for (const snapshot of snapshots)
    await cli(['snapshot', 'rm', snapshot.name, '--project', snapshot.project]);
}

export async function exampleRoundTrip(options: {
  cli: (args: string[]) => Promise<{ stdout: string; stderr: string }>;
  /** The server's port: API and gateway. */
  port: number;
  name: string;
  leftOf: (envId: string) => string[] | Promise<string[]>;
}): Promise<Environment> {
  const { cli, port, name } = options;
  const up = await cli(['up', '-f', 'examples/shop/compose.yaml', '--name', name, '--json']);
  const env = JSON.parse(up.stdout) as Environment;
  expect(env).toMatchObject({ name, state: 'ready', failure: null });
  expect(env.urls).toEqual({ web: `http://web--${name}.localhost:${port}/` });

  const page = await requestViaGateway(port, `web--${name}.localhost`);
  expect(page.status).toBe(200);
  for (const product of SEEDED) expect(page.text).toContain(product);

  const human = await cli(['get', name]);
  expect(human.stdout).toContain('ready');
  expect(human.stdout).toContain(env.urls.web);

  const ls = JSON.parse((await cli(['ls', '--json'])).stdout) as Environment[];
  expect(ls.map((e) => e.name)).toContain(name);

  const logs = await cli(['logs', name, 'migrate']);
  expect(logs.stdout.length).toBeGreaterThan(0);
  expect(env.data).toEqual([
    { volume: 'db-data', origin: 'seeded', snapshot: expect.any(String), job: 'migrate' },
  ]);

  // A second environment of the same template (another pull request's) starts with a clone of the
  // seeded database: the same rows, its migrate job not run.
  const second = JSON.parse(
    (await cli(['up', '-f', 'examples/shop/compose.yaml', '--name', `${name}-2`, '--json'])).stdout,
  ) as Environment;
  expect(second).toMatchObject({ state: 'ready', failure: null });
  expect(second.data).toEqual([
    { volume: 'db-data', origin: 'restored', snapshot: env.data[0]?.snapshot, job: 'migrate' },
  ]);
  const clonePage = await requestViaGateway(port, `web--${name}-2.localhost`);
  for (const product of SEEDED) expect(clonePage.text).toContain(product);
  expect((await cli(['get', `${name}-2`])).stdout).toMatch(/db-data\s+restored from snapshot/);
  await cli(['destroy', `${name}-2`]);
  expect(await options.leftOf(second.id)).toEqual([]);

  const down = JSON.parse((await cli(['destroy', name, '--json'])).stdout) as Environment;
  expect(down.state).toBe('destroyed');
  expect(await options.leftOf(env.id)).toEqual([]);
  // The example's database is seeded once and kept as a snapshot for later environments (where
  // the runtime keeps snapshots): it outlives the environment until removed.
  const snapshots = JSON.parse((await cli(['snapshot', 'ls', '--json'])).stdout) as Snapshot[];
  expect(snapshots).toHaveLength(1);
  for (const snapshot of snapshots) {
    expect(snapshot).toMatchObject({ volume: 'db-data', kind: 'seed', sourceEnvironment: { name } });
    await cli(['snapshot', 'rm', snapshot.name, '--project', snapshot.project]);
  }
  return env;
}
