/**
 * What a webhook's facts become, on a real SQLite store: approvals of forks are for one commit
 * (a label approves only when it is added, never a later push), and `approve --sha` refuses a
 * pull request that moved on.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ProjectPolicy } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore } from '../store/open-store.js';
import type { ProjectRecord, Store } from '../store/store.js';
import type { ChangeRequestEvent } from '../triggers/forge-event.js';
import { ConflictError } from './errors.js';
import { PreviewService } from './preview-service.js';

const sha = (c: string) => c.repeat(40);

describe('PreviewService', () => {
  let dir: string;
  let store: Store;
  let previews: PreviewService;
  let project: ProjectRecord;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-previews-'));
    store = await openStore({ dataDir: dir });
    previews = new PreviewService({ store, onChange: () => {} });
    project = await store.projects.create({
      name: 'shop',
      repoUrl: 'file:///nonexistent/shop.git',
      templateFile: null,
      branch: 'main',
      forge: 'github',
      forgeRepo: 'acme/shop',
      forgeApiUrl: null,
      policy: ProjectPolicy.parse({ approvalLabel: 'safe-to-test' }),
      webhookSecret: 'secret-secret',
      forgeToken: null,
      secretInputs: {},
    });
  });
  afterAll(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const event = (over: Partial<ChangeRequestEvent>): ChangeRequestEvent => ({
    kind: 'change_request',
    forge: 'github',
    repo: 'acme/shop',
    number: 5,
    action: 'opened',
    rawAction: 'opened',
    headSha: sha('a'),
    headRef: 'feature',
    baseSha: sha('0'),
    baseRef: 'main',
    fromFork: true,
    draft: false,
    merged: false,
    labels: [],
    title: 'a fork',
    url: null,
    author: 'mallory',
    cloneUrl: null,
    ...over,
  });
  const approved = async () => (await store.previews.get('shop/pr/5'))!.approved;

  it('a fork is approved by the label when it is added, for that commit only', async () => {
    await previews.record(project, event({}));
    expect(await approved()).toBe(false);
    // The fork's author cannot add labels, but GitHub sends the labels with every event: only
    // the `labeled` event counts.
    await previews.record(project, event({ action: 'other', rawAction: 'edited', labels: ['safe-to-test'] }));
    expect(await approved()).toBe(false);
    await previews.record(
      project,
      event({ action: 'labeled', rawAction: 'labeled', labels: ['safe-to-test'] }),
    );
    expect(await approved()).toBe(true);
    // A push: the label is still there, the approval is not.
    await previews.record(
      project,
      event({ action: 'updated', rawAction: 'synchronize', headSha: sha('b'), labels: ['safe-to-test'] }),
    );
    expect(await approved()).toBe(false);
  });

  it('approve refuses a pull request that moved on from the commit looked at', async () => {
    await expect(previews.approve('shop', 5, undefined, sha('a').slice(0, 12))).rejects.toThrow(
      ConflictError,
    );
    expect(await approved()).toBe(false);
    await previews.approve('shop', 5, undefined, sha('b').slice(0, 12));
    expect(await approved()).toBe(true);
  });

  it('readiness: p50/p95 (nearest rank) over whole UTC days, per day, a project-bound token kept to its own', async () => {
    const now = new Date('2026-06-10T12:00:00Z');
    const at = (iso: string, ms: number, head: string) => ({
      project: 'shop',
      previewId: `shop/pr/${head}`,
      envName: `shop-pr-${head}`,
      number: 1,
      branch: null,
      headSha: head,
      receivedAt: new Date(Date.parse(iso) - ms),
      readyAt: new Date(iso),
      readyMs: ms,
    });
    for (const [iso, ms, head] of [
      ['2026-06-10T01:00:00Z', 1000, 'a'],
      ['2026-06-10T02:00:00Z', 2000, 'b'],
      ['2026-06-10T03:00:00Z', 3000, 'c'],
      ['2026-06-10T04:00:00Z', 10000, 'd'],
      ['2026-06-09T23:59:59Z', 4000, 'e'],
      // the day before the first of a 2-day period: not counted
      ['2026-06-08T23:00:00Z', 99000, 'f'],
    ] as const)
      await store.previews.recordReadiness(at(iso, ms, head));
    const stats = await previews.readiness('shop', { tokenId: null, scope: 'read', project: null }, 2, now);
    expect(stats.count).toBe(5);
    expect(stats.p50Ms).toBe(3000); // 1000 2000 3000 4000 10000: the 3rd of 5
    expect(stats.p95Ms).toBe(10000);
    expect(stats.perDay).toEqual([
      { day: '2026-06-09', count: 1, p50Ms: 4000, p95Ms: 4000 },
      { day: '2026-06-10', count: 4, p50Ms: 2000, p95Ms: 10000 },
    ]);
    expect(stats.items[0]).toMatchObject({ environment: 'shop-pr-d', readyMs: 10000 });
    await expect(
      previews.readiness('shop', { tokenId: null, scope: 'read', project: 'other' }, 30, now),
    ).rejects.toThrow(/no project "shop"/);
    const none = await previews.readiness(
      'shop',
      { tokenId: null, scope: 'read', project: null },
      1,
      new Date('2027-01-01T00:00:00Z'),
    );
    expect(none).toMatchObject({ count: 0, p50Ms: null, p95Ms: null, perDay: [] });
  });
});
