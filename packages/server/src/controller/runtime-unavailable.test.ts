/**
 * When the Docker Engine cannot be reached, environments wait (pending, said once in the timeline)
 * and the API keeps answering; the wait is bounded: after `runtimeUnavailableFailAfterMs` the
 * environment fails with the reason, instead of being retried silently forever.
 */
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

const template = { filename: 'compose.yaml', content: 'services:\n  web:\n    image: anything\n' };

describe('with the runtime unreachable', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({
      dockerSocket: '/nonexistent/docker.sock',
      runtimeUnavailableFailAfterMs: 4_000,
    });
  });
  afterAll(async () => {
    await t.close({ destroyEnvironments: false }); // nothing was made, and nothing could be destroyed
  });

  it('keeps the environment pending, saying so once, with backoff instead of a retry storm', async () => {
    const res = await t.api<Environment>('POST', '/v1/environments', { name: 'waiting', template });
    expect(res.status).toBe(201);
    await new Promise((r) => setTimeout(r, 2_000)); // several reconcile intervals: nothing to await but time
    const env = (await t.api<Environment>('GET', '/v1/environments/waiting')).body;
    expect(env).toMatchObject({ state: 'pending', failure: null, services: [] });
    const messages = (await t.events('waiting')).map((e) => e.message);
    expect(messages[0]).toBe('requested');
    expect(messages.slice(1)).toEqual([
      expect.stringMatching(/^waiting for the runtime: Docker Engine is not reachable/),
    ]);
    const metrics = await (await fetch(`${t.server.url}/metrics`)).text();
    expect(metrics).toMatch(/mayfly_environments\{state="pending"\} 1/);
  });

  it('fails the environment with the reason once the wait is over', async () => {
    const failed = await t.waitForState('waiting', ['failed'], 30_000);
    expect(failed.failure).toMatchObject({ step: 'runtime' });
    expect(failed.failure!.reason).toMatch(/Docker Engine is not reachable/);
  });
});
