/**
 * When the Docker Engine cannot be reached, environments wait (pending, no failure) and the API
 * keeps answering; nothing is marked failed for an outage that is not the template's fault.
 */
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

describe('with the runtime unreachable', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({ dockerSocket: '/nonexistent/docker.sock' });
  });
  afterAll(async () => {
    await t.close({ destroyEnvironments: false }); // nothing was made, and nothing could be destroyed
  });

  it('keeps the environment pending, quietly, until the engine is back', async () => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'waiting',
      template: { filename: 'compose.yaml', content: 'services:\n  web:\n    image: anything\n' },
    });
    expect(res.status).toBe(201);
    await new Promise((r) => setTimeout(r, 2_000)); // several reconcile intervals
    const env = (await t.api<Environment>('GET', '/v1/environments/waiting')).body;
    expect(env).toMatchObject({ state: 'pending', failure: null, services: [] });
    // backoff, not a retry storm: the timeline holds the request and nothing else
    expect((await t.events('waiting')).map((e) => e.message)).toEqual(['requested']);
    const metrics = await (await fetch(`${t.server.url}/metrics`)).text();
    expect(metrics).toMatch(/mayfly_environments\{state="pending"\} 1/);
  });
});
