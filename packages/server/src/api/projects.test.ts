/**
 * Projects through the API, as a hostile token holder would try them: a token bound to the
 * project cannot send its forge token elsewhere, the token follows the repository it was given
 * for, plain http API URLs are refused, and preview names are kept for their project.
 */
import type { CreatedToken, Project } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test-support/test-server.js';

describe('projects API', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(async () => {
    await t.close();
  });

  const create = (body: Record<string, unknown>) =>
    t.api<Project>('POST', '/v1/projects', {
      repo: 'https://github.com/acme/shop.git',
      webhookSecret: 'a-webhook-secret',
      forgeToken: 'ghp_operator_token',
      ...body,
    });

  it('never returns secrets, and refuses a forge API over plain http to another machine or the name "default"', async () => {
    const made = await create({ name: 'shop' });
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ forgeRepo: 'acme/shop', hasWebhookSecret: true, hasForgeToken: true });
    expect(JSON.stringify(made.body)).not.toContain('ghp_operator_token');
    expect(JSON.stringify((await t.api('GET', '/v1/projects')).body)).not.toContain('a-webhook-secret');
    const http = await create({ name: 'plain', forgeApiUrl: 'http://evil.example/api' });
    expect(http.status).toBe(400);
    expect(JSON.stringify(http.body)).toContain('must be https');
    expect((await create({ name: 'local', forgeApiUrl: 'http://127.0.0.1:9/api' })).status).toBe(201);
    expect((await create({ name: 'default' })).status).toBe(400);
  });

  it('a token bound to the project may change its policies, not where its code and secrets go', async () => {
    // Admin tokens cannot be bound to a project, and projects change only with admin: a bound
    // write token is refused by scope…
    const bound = await t.api<CreatedToken>('POST', '/v1/tokens', {
      name: 'shop-writer',
      scope: 'write',
      project: 'shop',
    });
    expect(bound.status).toBe(201);
    expect(
      (
        await t.api(
          'PATCH',
          '/v1/projects/shop',
          { forgeApiUrl: 'https://evil.example/api' },
          bound.body.token,
        )
      ).status,
    ).toBe(403);
    // …and the service itself refuses a bound caller whatever its scope (were admin ever bindable).
    const access = { tokenId: 'tok_x', scope: 'admin' as const, project: 'shop' };
    for (const body of [
      { forgeApiUrl: 'https://evil.example/api' },
      { repo: 'file:///etc' },
      { webhookSecret: 'the-attackers-secret' },
      { forgeToken: 'x' },
    ]) {
      await expect(t.server.projects.update('shop', body, access), JSON.stringify(body)).rejects.toThrow(
        /cannot change/,
      );
    }
    await t.server.projects.update('shop', { policy: { ttl: '2h' } }, access);
    const after = (await t.api<Project>('GET', '/v1/projects/shop')).body;
    expect(after).toMatchObject({
      repo: 'https://github.com/acme/shop.git',
      forgeApiUrl: null,
      hasForgeToken: true,
    });
    expect(after.policy.ttl).toBe('2h');
  });

  it('a new repository without a token in the same request drops the forge token', async () => {
    const moved = await t.api<Project>('PATCH', '/v1/projects/shop', {
      repo: 'https://github.com/acme/shop2.git',
    });
    expect(moved.body).toMatchObject({ repo: 'https://github.com/acme/shop2.git', hasForgeToken: false });
    const again = await t.api<Project>('PATCH', '/v1/projects/shop', {
      repo: 'https://github.com/acme/shop.git',
      forgeToken: 'ghp_new',
    });
    expect(again.body.hasForgeToken).toBe(true);
  });

  it("another project cannot take a project's preview names", async () => {
    const content = 'services:\n  app:\n    image: x\n';
    for (const name of ['shop-pr-13', 'shop-main']) {
      const res = await t.api('POST', '/v1/environments', {
        name,
        template: { filename: 'compose.yaml', content },
      });
      expect(res.status, name).toBe(409);
      expect(JSON.stringify(res.body)).toContain('kept for the previews of project shop');
    }
  });
});
