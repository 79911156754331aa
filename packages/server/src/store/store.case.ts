/**
 * The store's conformance suite: every dialect runs these same cases (see `store.test.ts`).
 * Each test gets a fresh, empty database from its {@link StoreTarget}.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ENV_STATES, type EnvState } from '@mayfly/contract';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { EnvPlan } from '../plan/plan.js';
import { EnvironmentNotFoundError } from './environment-repository.js';
import {
  LeaseLostError,
  NameTakenError,
  type NewEnvironment,
  SnapshotNameTakenError,
  type Store,
} from './store.js';
import { hashToken } from './token-repository.js';

/** One isolated, empty database for one test. */
export interface StoreDatabase {
  /** Opens a store on this database; call it again for a second replica (its own connection/pool). */
  open(): Promise<Store>;
  /**
   * Runs raw SQL against this database, outside any store, to inspect what is really stored or to
   * set up what a store's API cannot (a lease written by another clock, say); rows of a query, or [].
   */
  rows(query: string): Promise<Record<string, unknown>[]>;
  /** Migrates this (new) database only up to the migration `name`, as an older release would have left it. */
  migrateTo(name: string): Promise<void>;
  /** Drops the database (stores opened on it are already closed). */
  drop(): Promise<void>;
}

/** Where a dialect's test databases come from. */
export interface StoreTarget {
  dialect: Store['dialect'];
  create(): Promise<StoreDatabase>;
}

const PLAN: EnvPlan = {
  envId: 'env_1',
  envName: 'web',
  project: 'shop',
  isolation: 'runc',
  volumes: [{ name: 'pgdata' }],
  workloads: [
    {
      name: 'web',
      kind: 'service',
      image: {
        ref: 'mayfly/web:sha-abc',
        build: { context: '/src/web', dockerfile: 'Dockerfile', args: { NODE_ENV: 'production' } },
      },
      labels: { 'com.example.team': 'shop' },
      files: [{ target: '/run/secrets/token', content: 's3cr3t', mode: 0o444 }],
      ulimits: [{ name: 'nofile', soft: 1024, hard: 2048 }],
      aliases: ['web-primary'],
      extraHosts: [{ host: 'db.example', ip: '10.0.0.5' }],
      capDrop: ['NET_RAW'],
      readOnlyRootFilesystem: true,
      command: ['node', 'server.js', '--port=3000'],
      env: { GREETING: 'héllo "world" ✓', EMPTY: '' },
      ports: [{ container: 3000, protocol: 'tcp', http: true }],
      healthcheck: {
        command: { shell: 'curl -f localhost:3000' },
        intervalMs: 1000,
        timeoutMs: 500,
        retries: 3,
        startPeriodMs: 0,
      },
      dependsOn: [{ name: 'db', condition: 'service_healthy' }],
      mounts: [{ source: 'pgdata', target: '/data', type: 'volume', readOnly: false }],
      resources: { cpus: 0.5, memoryBytes: 268_435_456 },
      replicas: 1,
      restart: 'unless-stopped',
      workingDir: '/app',
      specHash: 'sha256:0123abcd',
    },
  ],
};

let counter = 0;
/** A new environment with a unique id and name unless given. */
function newEnv(overrides: Partial<NewEnvironment> = {}): NewEnvironment {
  counter += 1;
  return {
    id: `env_${counter}_${Math.random().toString(36).slice(2, 8)}`,
    name: `env-${counter}`,
    project: 'default',
    kind: 'preview',
    templateFile: 'mayfly.yaml',
    templateContent: 'services:\n  web:\n    image: nginx\n',
    templateDir: null,
    inputs: {},
    plan: null,
    ttlMs: null,
    expiresAt: null,
    ...overrides,
  };
}

/** Registers the shared store cases for one dialect. */
export function describeStore(name: string, target: StoreTarget): void {
  describe(`store on ${name}`, () => {
    let database: StoreDatabase;
    let opened: Store[] = [];

    /** Opens a store on this test's database; closed after the test. */
    async function open(): Promise<Store> {
      const store = await database.open();
      opened.push(store);
      return store;
    }

    beforeEach(async () => {
      database = await target.create();
      opened = [];
    });

    afterEach(async () => {
      await Promise.all(opened.map((store) => store.close()));
      await database.drop();
    });

    describe('environments', () => {
      it('round-trips every field through create and get', async () => {
        const store = await open();
        expect(store.dialect).toBe(target.dialect);
        const before = Date.now();
        const input = newEnv({
          name: 'web',
          project: 'shop',
          kind: 'sandbox',
          templateFile: 'compose.yaml',
          templateContent: "services:\n  web:\n    image: 'x'\n    command: [\"a\", 'b'] # ✓\n",
          templateDir: '/srv/repo',
          inputs: { PR_NUMBER: '42', BRANCH: 'feat/ünïcode' },
          plan: PLAN,
          ttlMs: 30 * 86_400_000,
          expiresAt: new Date('2031-02-03T04:05:06.789Z'),
        });
        const created = await store.environments.create(input);
        const after = Date.now();
        expect(created).toEqual({
          ...input,
          state: 'pending',
          desired: 'present',
          failure: null,
          createdAt: expect.any(Date),
          updatedAt: expect.any(Date),
          leaseOwner: null,
          leaseUntil: null,
          attempts: 0,
          retryAt: null,
          source: null,
          revision: 0,
          plannedRevision: 0,
          failedRevision: 0,
          updateFailure: null,
          sleep: false,
          keep: false,
          lastActiveAt: null,
          origin: null,
        });
        expect(created.createdAt.getTime()).toBeGreaterThanOrEqual(before);
        expect(created.createdAt.getTime()).toBeLessThanOrEqual(after + 5);
        expect(created.updatedAt).toEqual(created.createdAt);

        const fetched = await store.environments.get(input.id);
        expect(fetched).toEqual(created);
        expect(fetched?.expiresAt).toBeInstanceOf(Date);
        expect(fetched?.expiresAt?.toISOString()).toBe('2031-02-03T04:05:06.789Z');
        expect(fetched?.plan).toEqual(PLAN);
        expect(await store.environments.get('env_missing')).toBeNull();
      });

      it('updates each field, keeps the rest, and moves updatedAt every time', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv({ plan: PLAN }));
        let previous = env;
        const patches = [
          { state: 'building' as const },
          { desired: 'absent' as const },
          { failure: { step: 'build', reason: 'exit 1: "npm ci" failed' } },
          { expiresAt: new Date('2030-01-01T00:00:00.001Z') },
          { name: 'renamed' },
          { plan: null },
          { failure: null, expiresAt: null },
          { attempts: 3 },
          { retryAt: new Date('2030-01-01T00:00:05.123Z') },
          { attempts: 0, retryAt: null },
          {},
        ];
        for (const patch of patches) {
          const updated = await store.environments.update(env.id, patch);
          expect(updated).toEqual({ ...previous, ...patch, updatedAt: expect.any(Date) });
          expect(updated.updatedAt.getTime()).toBeGreaterThan(previous.updatedAt.getTime());
          expect(updated.createdAt).toEqual(env.createdAt);
          expect(await store.environments.get(env.id)).toEqual(updated);
          previous = updated;
        }
        await expect(store.environments.update('env_missing', { state: 'ready' })).rejects.toBeInstanceOf(
          EnvironmentNotFoundError,
        );
      });

      it('keeps names unique among live environments and frees them once destroyed', async () => {
        const store = await open();
        const first = await store.environments.create(newEnv({ name: 'web' }));
        const clash = store.environments.create(newEnv({ name: 'web', project: 'other' }));
        await expect(clash).rejects.toBeInstanceOf(NameTakenError);
        await expect(clash).rejects.toMatchObject({ envName: 'web' });
        // states other than destroyed still hold the name
        await store.environments.update(first.id, { state: 'destroying', desired: 'absent' });
        await expect(store.environments.create(newEnv({ name: 'web' }))).rejects.toBeInstanceOf(
          NameTakenError,
        );

        await store.environments.update(first.id, { state: 'destroyed' });
        const second = await store.environments.create(newEnv({ name: 'web' }));
        expect(second.name).toBe('web');

        // renaming onto a live name, or bringing the destroyed one back, collides too
        const other = await store.environments.create(newEnv({ name: 'api' }));
        await expect(store.environments.update(other.id, { name: 'web' })).rejects.toBeInstanceOf(
          NameTakenError,
        );
        await expect(store.environments.update(first.id, { state: 'pending' })).rejects.toMatchObject({
          name: 'NameTakenError',
          envName: 'web',
        });
        // a duplicate id is not a name clash
        await expect(store.environments.create(newEnv({ id: other.id }))).rejects.not.toBeInstanceOf(
          NameTakenError,
        );
      });

      it('finds by name the live environment, else the newest destroyed one', async () => {
        const store = await open();
        expect(await store.environments.getByName('web')).toBeNull();
        const first = await store.environments.create(newEnv({ name: 'web' }));
        expect((await store.environments.getByName('web'))?.id).toBe(first.id);
        await store.environments.update(first.id, { state: 'destroyed' });
        expect((await store.environments.getByName('web'))?.id).toBe(first.id);

        const second = await store.environments.create(newEnv({ name: 'web' }));
        expect((await store.environments.getByName('web'))?.id).toBe(second.id);
        await store.environments.update(second.id, { state: 'destroyed' });
        const third = await store.environments.create(newEnv({ name: 'web' }));
        expect((await store.environments.getByName('web'))?.id).toBe(third.id);
        await store.environments.update(third.id, { state: 'destroyed' });
        expect((await store.environments.getByName('web'))?.id).toBe(third.id);
        expect(await store.environments.getByName('we')).toBeNull();
      });

      it('lists by project and state, oldest first, leaving out destroyed ones by default', async () => {
        const store = await open();
        const a = await store.environments.create(newEnv({ project: 'shop' }));
        const b = await store.environments.create(newEnv({ project: 'blog' }));
        const c = await store.environments.create(newEnv({ project: 'shop' }));
        const d = await store.environments.create(newEnv({ project: 'shop' }));
        await store.environments.update(b.id, { state: 'ready' });
        await store.environments.update(c.id, { state: 'failed' });
        await store.environments.update(d.id, { state: 'destroyed' });
        const ids = async (filter?: Parameters<Store['environments']['list']>[0]) =>
          (await store.environments.list(filter)).map((env) => env.id);

        expect(await ids()).toEqual([a.id, b.id, c.id]);
        expect(await ids({ includeDestroyed: true })).toEqual([a.id, b.id, c.id, d.id]);
        expect(await ids({ project: 'shop' })).toEqual([a.id, c.id]);
        expect(await ids({ project: 'shop', includeDestroyed: true })).toEqual([a.id, c.id, d.id]);
        expect(await ids({ states: ['ready', 'failed'] })).toEqual([b.id, c.id]);
        expect(await ids({ states: ['destroyed'] })).toEqual([d.id]);
        expect(await ids({ states: [] })).toEqual([]);
        expect(await ids({ project: 'none' })).toEqual([]);
        expect((await store.environments.list())[0]).toEqual(await store.environments.get(a.id));
      });

      it('lists the environments that need work, including expired ones', async () => {
        const store = await open();
        const now = new Date('2030-06-01T12:00:00.000Z');
        const past = new Date(now.getTime() - 1);
        const future = new Date(now.getTime() + 1);
        const cases: {
          state: EnvState;
          desired: 'present' | 'absent';
          expiresAt: Date | null;
          needsWork: boolean;
        }[] = [];
        for (const state of ENV_STATES) {
          cases.push({
            state,
            desired: 'present',
            expiresAt: null,
            needsWork: !['ready', 'failed', 'sleeping'].includes(state),
          });
          cases.push({ state, desired: 'absent', expiresAt: null, needsWork: state !== 'destroyed' });
          // TTL ran out (exactly now counts): everything that should exist needs work
          cases.push({ state, desired: 'present', expiresAt: now, needsWork: true });
          cases.push({ state, desired: 'present', expiresAt: past, needsWork: true });
          cases.push({
            state,
            desired: 'present',
            expiresAt: future,
            needsWork: !['ready', 'failed', 'sleeping'].includes(state),
          });
          cases.push({ state, desired: 'absent', expiresAt: past, needsWork: state !== 'destroyed' });
        }
        const expected: string[] = [];
        for (const c of cases) {
          const env = await store.environments.create(newEnv({ expiresAt: c.expiresAt }));
          // A sleeping environment is one asked to sleep.
          await store.environments.update(env.id, {
            state: c.state,
            desired: c.desired,
            sleep: c.state === 'sleeping',
          });
          if (c.needsWork) expected.push(env.id);
        }
        // Asked to sleep, or to wake, or to move to a new revision (not one that failed).
        const lifecycle = [
          { patch: { state: 'ready', sleep: true }, needsWork: true },
          { patch: { state: 'sleeping', sleep: false }, needsWork: true },
          { patch: { state: 'ready', revision: 2, plannedRevision: 1 }, needsWork: true },
          { patch: { state: 'ready', revision: 2, plannedRevision: 1, failedRevision: 2 }, needsWork: false },
          { patch: { state: 'ready', revision: 2, plannedRevision: 2 }, needsWork: false },
        ] as const;
        for (const c of lifecycle) {
          const env = await store.environments.create(newEnv({}));
          await store.environments.update(env.id, c.patch);
          if (c.needsWork) expected.push(env.id);
        }
        const needing = await store.environments.listNeedingWork(now);
        expect(needing.map((env) => env.id).sort()).toEqual(expected.sort());
        expect(needing.every((env) => env.createdAt instanceof Date)).toBe(true);
        expect(await store.environments.listNeedingWork(new Date('2000-01-01T00:00:00.000Z'))).toHaveLength(
          cases.filter(
            (c) =>
              c.needsWork && !(c.desired === 'present' && ['ready', 'failed', 'sleeping'].includes(c.state)),
          ).length + lifecycle.filter((c) => c.needsWork).length,
        );
      });
    });

    describe('sandboxes', () => {
      it('round-trips a sandbox, changes its state and expiry, ends it once, and forgets it after retention', async () => {
        const store = await open();
        const startedAt = new Date('2026-01-01T00:00:00.000Z');
        const id = `sbx${Math.random().toString(36).slice(2, 10)}`;
        await store.sandboxes.insert({
          id,
          template: 'base',
          state: 'running',
          metadata: { owner: 'agent-7' },
          cpu: 0.5,
          memoryMb: 512,
          createdBy: 'tok_1',
          startedAt,
          expiresAt: new Date(startedAt.getTime() + 60_000),
        });
        expect(await store.sandboxes.get(id)).toEqual({
          id,
          template: 'base',
          state: 'running',
          endedReason: null,
          metadata: { owner: 'agent-7' },
          cpu: 0.5,
          memoryMb: 512,
          peakMemoryBytes: null,
          createdBy: 'tok_1',
          startedAt,
          expiresAt: new Date(startedAt.getTime() + 60_000),
          endedAt: null,
        });
        expect(await store.sandboxes.setState(id, 'paused')).toBe(true);
        expect((await store.sandboxes.list({ states: ['paused'] })).map((s) => s.id)).toContain(id);
        expect((await store.sandboxes.list({ states: ['running'] })).map((s) => s.id)).not.toContain(id);
        expect(await store.sandboxes.expiredBefore(new Date(startedAt.getTime() + 30_000))).not.toContain(id);
        expect(await store.sandboxes.expiredBefore(new Date(startedAt.getTime() + 60_000))).toContain(id);
        expect(await store.sandboxes.setExpiry(id, new Date(startedAt.getTime() + 120_000))).toBe(true);
        expect(await store.sandboxes.expiredBefore(new Date(startedAt.getTime() + 60_000))).not.toContain(id);

        expect(await store.sandboxes.end(id, 'oom', 3 * 1024 ** 3)).toBe(true);
        expect(await store.sandboxes.end(id, 'killed', null)).toBe(false); // the first reason stays
        const ended = await store.sandboxes.get(id);
        expect(ended).toMatchObject({ state: 'ended', endedReason: 'oom', peakMemoryBytes: 3 * 1024 ** 3 });
        expect(await store.sandboxes.setState(id, 'running')).toBe(false);
        expect(await store.sandboxes.setExpiry(id, new Date())).toBe(false);
        expect(await store.sandboxes.forgetEndedBefore(new Date(ended!.endedAt!.getTime() - 1000))).toBe(0);
        expect(await store.sandboxes.forgetEndedBefore(new Date(Date.now() + 1000))).toBeGreaterThanOrEqual(
          1,
        );
        expect(await store.sandboxes.get(id)).toBeNull();
      });

      it('keeps sandbox templates: put creates, put again replaces (creation time kept), remove', async () => {
        const store = await open();
        const name = `tpl-${Math.random().toString(36).slice(2, 10)}`;
        const settings = {
          user: '1000:1000',
          workdir: '/home/user',
          env: { LANG: 'C.UTF-8' },
          cpu: 0.5,
          memoryMb: 256,
          pids: 128,
          diskMb: 64,
          isolation: 'runc' as const,
          pool: 1,
        };
        const first = new Date('2026-02-03T04:05:06.007Z');
        expect(
          await store.sandboxTemplates.put(
            {
              name,
              source: 'dockerfile',
              image: 'mayfly-build/sandbox:abc',
              workspace: 'sbxtpl-x',
              dockerfile: 'Dockerfile',
              settings,
            },
            first,
          ),
        ).toBeNull();
        const later = new Date('2026-02-04T00:00:00.000Z');
        const replacement = {
          name,
          source: 'image' as const,
          image: 'debian:12',
          workspace: null,
          dockerfile: null,
          settings: { ...settings, pool: 0 },
        };
        const before = await store.sandboxTemplates.put(replacement, later);
        expect(before).toMatchObject({
          source: 'dockerfile',
          workspace: 'sbxtpl-x',
          dockerfile: 'Dockerfile',
          settings,
        });
        expect(await store.sandboxTemplates.get(name)).toEqual({
          ...replacement,
          createdAt: first,
          updatedAt: later,
        });
        expect((await store.sandboxTemplates.list()).map((t) => t.name)).toContain(name);
        expect(await store.sandboxTemplates.remove(name)).toBe(true);
        expect(await store.sandboxTemplates.remove(name)).toBe(false);
        expect(await store.sandboxTemplates.get(name)).toBeNull();
      });
    });

    describe('environments: retries and retention', () => {
      it('leaves out of the work list what backs off until a later time', async () => {
        const store = await open();
        const now = new Date('2030-06-01T12:00:00.000Z');
        const cases: { retryAt: Date | null; needsWork: boolean }[] = [
          { retryAt: null, needsWork: true },
          { retryAt: new Date(now.getTime() - 1), needsWork: true },
          { retryAt: now, needsWork: true },
          { retryAt: new Date(now.getTime() + 1), needsWork: false },
        ];
        const expected: string[] = [];
        for (const c of cases) {
          // one of each reason to need work: bring-up, teardown, expired TTL
          const bringUp = await store.environments.create(newEnv());
          const tearDown = await store.environments.create(newEnv());
          const expired = await store.environments.create(newEnv({ expiresAt: now }));
          await store.environments.update(bringUp.id, { state: 'building', attempts: 2, retryAt: c.retryAt });
          await store.environments.update(tearDown.id, { desired: 'absent', retryAt: c.retryAt });
          await store.environments.update(expired.id, { state: 'ready', retryAt: c.retryAt });
          if (c.needsWork) expected.push(bringUp.id, tearDown.id, expired.id);
        }
        const needing = await store.environments.listNeedingWork(now);
        expect(needing.map((env) => env.id).sort()).toEqual(expected.sort());
        const backingOff = needing.find(
          (env) => env.attempts === 2 && env.retryAt?.getTime() === now.getTime(),
        );
        expect(backingOff?.state).toBe('building');
      });

      it('deletes destroyed environments past retention, with their events and kept logs', async () => {
        const store = await open();
        const old = await store.environments.create(newEnv());
        await store.events.append({ envId: old.id, type: 'created', state: 'pending', message: 'a' });
        await store.events.append({ envId: old.id, type: 'state', state: 'destroyed', message: 'b' });
        await store.logs.save(old.id, 'web', 'last words');
        await store.environments.update(old.id, { desired: 'absent', state: 'destroying' });
        await store.environments.update(old.id, { state: 'destroyed' });
        // destroyed but asked back: about to be re-created, not history
        const revived = await store.environments.create(newEnv());
        await store.environments.update(revived.id, { state: 'destroyed' });
        const live = await store.environments.create(newEnv());
        await store.environments.update(live.id, { state: 'ready' });
        const gone = await store.environments.create(newEnv());
        await store.environments.update(gone.id, { desired: 'absent', state: 'destroying' });
        const cutoff = new Date((await store.environments.get(live.id))!.updatedAt.getTime() + 1);
        const recent = await store.environments.create(newEnv());
        await store.events.append({ envId: recent.id, type: 'created', state: 'pending', message: 'c' });
        await store.logs.save(recent.id, 'web', 'still here');
        await store.environments.update(recent.id, { desired: 'absent', state: 'destroyed' });
        expect((await store.environments.get(recent.id))!.updatedAt.getTime()).toBeGreaterThanOrEqual(
          cutoff.getTime(),
        );

        expect(await store.environments.deleteDestroyed(cutoff)).toBe(1);
        expect(await store.environments.get(old.id)).toBeNull();
        const remaining = (await store.environments.list({ includeDestroyed: true })).map((e) => e.id);
        expect(remaining.sort()).toEqual([revived.id, live.id, gone.id, recent.id].sort());
        // what belonged to it is gone from the tables, not only from the API
        const count = async (table: string, envId: string) =>
          Number((await database.rows(`select count(*) as n from ${table} where env_id = '${envId}'`))[0]?.n);
        expect(await count('events', old.id)).toBe(0);
        expect(await count('kept_logs', old.id)).toBe(0);
        expect(await count('events', recent.id)).toBe(1);
        expect(await store.logs.list(recent.id)).toHaveLength(1);

        expect(await store.environments.deleteDestroyed(cutoff)).toBe(0);
        expect(await store.environments.deleteDestroyed(new Date(Date.now() + 60_000))).toBe(1);
        expect(await store.environments.get(recent.id)).toBeNull();
        expect(await count('events', recent.id)).toBe(0);
        expect(await count('kept_logs', recent.id)).toBe(0);
      });
    });

    describe('dashboard sessions and login links', () => {
      it('are tokens of their own kind: never API tokens, listed or counted as such; a link works once; both die with their token', async () => {
        const store = await open();
        const { token: api, record: parent } = await store.tokens.create({ name: 'ci', scopes: ['write'] });
        const session = await store.tokens.create({
          name: 'dashboard session',
          scopes: ['write'],
          kind: 'session',
          parentId: parent.id,
          expiresAt: new Date(Date.now() + 60_000),
        });
        const login = await store.tokens.create({
          name: 'dashboard login link',
          scopes: ['write'],
          kind: 'login',
          parentId: parent.id,
          expiresAt: new Date(Date.now() + 60_000),
        });
        expect(session.token).toMatch(/^mfs_[A-Za-z0-9_-]{43}$/);
        expect(login.token).toMatch(/^mfl_[A-Za-z0-9_-]{43}$/);
        // each only as its own kind
        expect(await store.tokens.verify(session.token)).toBeNull();
        expect(await store.tokens.verify(login.token)).toBeNull();
        expect(await store.tokens.verify(api, undefined, 'session')).toBeNull();
        expect(await store.tokens.verify(login.token, undefined, 'session')).toBeNull();
        expect((await store.tokens.verify(session.token, undefined, 'session'))?.id).toBe(session.record.id);
        expect((await store.tokens.list()).map((t) => t.id)).toEqual([parent.id]);
        expect(await store.tokens.count()).toBe(1);
        // a link once, even asked twice at the same time
        const [first, second] = await Promise.all([
          store.tokens.consumeLogin(login.token),
          store.tokens.consumeLogin(login.token),
        ]);
        expect([first?.id, second?.id].filter(Boolean)).toEqual([login.record.id]);
        expect(await store.tokens.consumeLogin(login.token)).toBeNull();
        expect(await store.tokens.consumeLogin(session.token)).toBeNull();
        // expired
        const late = await store.tokens.create({
          name: 'dashboard login link',
          scopes: ['read'],
          kind: 'login',
          parentId: parent.id,
          expiresAt: new Date(Date.now() + 60_000),
        });
        expect(await store.tokens.consumeLogin(late.token, new Date(Date.now() + 120_000))).toBeNull();
        // the parent revoked: its session and links are dead too
        expect(await store.tokens.revoke(parent.id)).toBe(true);
        expect(await store.tokens.verify(session.token, undefined, 'session')).toBeNull();
        expect(await store.tokens.consumeLogin(late.token)).toBeNull();
      });
    });

    describe('replicas', () => {
      it('counts a replica alive until its time runs out, longer when it beats again, not after it leaves', async () => {
        const [a, b] = [await open(), await open()];
        await a.replicas.beat('replica-a', 60_000);
        await b.replicas.beat('replica-b', 2_000);
        expect(await a.replicas.alive()).toEqual(['replica-a', 'replica-b']);
        // b stops beating: gone for everyone once its time is up (the database's clock), unless
        // asked with a grace
        await waitFor(async () => (await a.replicas.alive()).length === 1, 10_000);
        expect(await b.replicas.alive()).toEqual(['replica-a']);
        expect(await b.replicas.alive(60_000)).toEqual(['replica-a', 'replica-b']);
        // and it counts again when it beats again
        await a.replicas.beat('replica-a', 60_000);
        await b.replicas.beat('replica-b', 60_000);
        expect(await a.replicas.alive()).toEqual(['replica-a', 'replica-b']);
        await a.replicas.leave('replica-a');
        expect(await b.replicas.alive()).toEqual(['replica-b']);
      });
    });

    describe('webhook deliveries and readiness', () => {
      it("records a delivery once, with its outcome, lists a project's newest first, and forgets them with the project", async () => {
        const store = await open();
        const base = {
          project: 'shop',
          event: 'pull_request',
          summary: 'pull request #1 opened at abc',
          eventJson: '{"kind":"ping"}',
        };
        expect(await store.projects.recordDelivery({ ...base, id: 'github:shop:d1', deliveryId: 'd1' })).toBe(
          true,
        );
        expect(await store.projects.recordDelivery({ ...base, id: 'github:shop:d1', deliveryId: 'd1' })).toBe(
          false,
        );
        await new Promise((r) => setTimeout(r, 5));
        await store.projects.recordDelivery({
          ...base,
          id: 'github:shop:d2',
          deliveryId: 'd2',
          redeliveryOf: 'github:shop:d1',
          summary: 'nul\u0000byte',
        });
        await store.projects.recordDelivery({
          ...base,
          id: 'github:other:d3',
          project: 'other',
          deliveryId: 'd3',
        });
        await store.projects.setDeliveryOutcome('github:shop:d1', 'recorded');
        const listed = await store.projects.listDeliveries('shop', 10);
        expect(listed.map((d) => [d.deliveryId, d.outcome, d.redeliveryOf])).toEqual([
          ['d2', null, 'github:shop:d1'],
          ['d1', 'recorded', null],
        ]);
        expect(listed[0]!.summary).toBe('nul\uFFFDbyte');
        expect(await store.projects.listDeliveries('shop', 1)).toHaveLength(1);
        expect((await store.projects.getDelivery('github:shop:d1'))?.eventJson).toBe('{"kind":"ping"}');
        // a project deleted takes its deliveries along; another project's stay
        await store.projects.delete('shop');
        expect(await store.projects.listDeliveries('shop', 10)).toEqual([]);
        expect(await store.projects.listDeliveries('other', 10)).toHaveLength(1);
        expect(await store.projects.pruneDeliveries(new Date(Date.now() + 1000))).toBe(1);
      });

      it('records readiness once per preview and head, lists a period newest first, and prunes old ones', async () => {
        const store = await open();
        const at = (daysAgo: number) => new Date(Date.now() - daysAgo * 86_400_000);
        const sample = (head: string, daysAgo: number, readyMs: number) => ({
          project: 'shop',
          previewId: 'shop/pr/1',
          envName: 'shop-pr-1',
          number: 1,
          branch: null,
          headSha: head,
          receivedAt: new Date(at(daysAgo).getTime() - readyMs),
          readyAt: at(daysAgo),
          readyMs,
        });
        await store.previews.recordReadiness(sample('a', 40, 1000));
        await store.previews.recordReadiness(sample('b', 2, 2000));
        await store.previews.recordReadiness(sample('b', 1, 9999)); // the same head again: kept once
        const newest = sample('c', 1, 3000);
        await store.previews.recordReadiness(newest);
        const listed = await store.previews.listReadiness('shop', at(30), 100);
        expect(listed.map((r) => [r.headSha, r.readyMs])).toEqual([
          ['c', 3000],
          ['b', 2000],
        ]);
        expect(listed[0]!.readyAt.getTime()).toBe(newest.readyAt.getTime());
        expect(await store.previews.listReadiness('shop', at(30), 1)).toHaveLength(1);
        expect(await store.previews.listReadiness('other', at(60), 100)).toEqual([]);
        expect(await store.previews.pruneReadiness(at(30))).toBe(1);
        await store.previews.deleteForProject('shop');
        expect(await store.previews.listReadiness('shop', at(60), 100)).toEqual([]);
      });
    });

    describe('leases', () => {
      it('lets one owner hold an environment until it releases it', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv());
        const before = Date.now();
        expect(await store.environments.claim(env.id, 'replica-a', 60_000)).toBe(true);
        const held = await store.environments.get(env.id);
        expect(held?.leaseOwner).toBe('replica-a');
        expect(held?.leaseUntil?.getTime()).toBeGreaterThanOrEqual(before + 60_000);
        expect(held?.leaseUntil?.getTime()).toBeLessThanOrEqual(Date.now() + 60_000);

        expect(await store.environments.claim(env.id, 'replica-b', 60_000)).toBe(false);
        // the holder renews, for longer
        expect(await store.environments.claim(env.id, 'replica-a', 120_000)).toBe(true);
        const renewed = await store.environments.get(env.id);
        expect(renewed?.leaseUntil?.getTime()).toBeGreaterThan(held!.leaseUntil!.getTime());

        // only the holder can release
        await store.environments.release(env.id, 'replica-b');
        expect((await store.environments.get(env.id))?.leaseOwner).toBe('replica-a');
        expect(await store.environments.claim(env.id, 'replica-b', 60_000)).toBe(false);
        await store.environments.release(env.id, 'replica-a');
        const released = await store.environments.get(env.id);
        expect(released?.leaseOwner).toBeNull();
        expect(released?.leaseUntil).toBeNull();
        // a lease is bookkeeping, not a change of the environment
        expect(released?.updatedAt).toEqual(env.updatedAt);
        expect(await store.environments.claim(env.id, 'replica-b', 60_000)).toBe(true);

        expect(await store.environments.claim('env_missing', 'replica-a', 60_000)).toBe(false);
      });

      it('hands an expired lease to the next owner', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv());
        const claimedAt = Date.now();
        expect(await store.environments.claim(env.id, 'replica-a', 300)).toBe(true);
        expect(await store.environments.claim(env.id, 'replica-b', 60_000)).toBe(false);
        await waitFor(() => store.environments.claim(env.id, 'replica-b', 60_000));
        expect(Date.now() - claimedAt).toBeGreaterThanOrEqual(290);
        expect((await store.environments.get(env.id))?.leaseOwner).toBe('replica-b');
        expect(await store.environments.claim(env.id, 'replica-a', 60_000)).toBe(false);
      });

      it('compares lease expiry on the database, whatever a lease holder or claimer wrote', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv());
        const setLease = (owner: string, until: string) =>
          database.rows(
            `update environments set lease_owner = '${owner}', lease_until = '${until}' where id = '${env.id}'`,
          );
        await setLease('replica-a', '2000-01-01T00:00:00.000Z');
        expect(await store.environments.claim(env.id, 'replica-b', 60_000)).toBe(true);
        await setLease('replica-a', '2999-01-01T00:00:00.000Z');
        expect(await store.environments.claim(env.id, 'replica-b', 60_000)).toBe(false);
        expect((await store.environments.get(env.id))?.leaseOwner).toBe('replica-a');
      });

      it('takes lease times from the database clock, never a replica’s', async () => {
        const [a, b] = await Promise.all([open(), open()]);
        const held = await a.environments.create(newEnv());
        const free = await a.environments.create(newEnv());
        const realBefore = Date.now();
        expect(await a.environments.claim(held.id, 'replica-a', 60_000)).toBe(true);
        try {
          vi.useFakeTimers({ toFake: ['Date'] });
          // b's clock runs an hour ahead: by that clock a's lease ran out long ago
          vi.setSystemTime(realBefore + 3_600_000);
          expect(await b.environments.claim(held.id, 'replica-b', 60_000)).toBe(false);
          // an hour behind: the lease it takes must still last 60 s from the database's now
          vi.setSystemTime(realBefore - 3_600_000);
          expect(await b.environments.claim(free.id, 'replica-b', 60_000)).toBe(true);
        } finally {
          vi.useRealTimers();
        }
        const realAfter = Date.now();
        expect((await a.environments.get(held.id))?.leaseOwner).toBe('replica-a');
        const until = (await a.environments.get(free.id))?.leaseUntil?.getTime() ?? 0;
        expect(until).toBeGreaterThanOrEqual(realBefore + 60_000);
        expect(until).toBeLessThanOrEqual(realAfter + 60_000);
        expect(await a.environments.claim(free.id, 'replica-a', 60_000)).toBe(false);
      });

      it('fences updates: only the lease holder writes, and a lost lease changes nothing', async () => {
        const [a, b] = await Promise.all([open(), open()]);
        const env = await a.environments.create(newEnv());
        expect(await a.environments.claim(env.id, 'replica-a', 60_000)).toBe(true);
        const building = await a.environments.update(env.id, { state: 'building' }, { owner: 'replica-a' });
        expect(building.state).toBe('building');

        const lost = b.environments.update(env.id, { state: 'failed', attempts: 1 }, { owner: 'replica-b' });
        await expect(lost).rejects.toBeInstanceOf(LeaseLostError);
        await expect(lost).rejects.toMatchObject({ envId: env.id, owner: 'replica-b' });
        expect(await a.environments.get(env.id)).toEqual(building);

        // a's lease runs out and b takes over: a's next write is refused
        await database.rows(
          `update environments set lease_until = '2000-01-01T00:00:00.000Z' where id = '${env.id}'`,
        );
        expect(await b.environments.claim(env.id, 'replica-b', 60_000)).toBe(true);
        const taken = await a.environments.get(env.id);
        await expect(
          a.environments.update(env.id, { state: 'ready' }, { owner: 'replica-a' }),
        ).rejects.toBeInstanceOf(LeaseLostError);
        expect(await a.environments.get(env.id)).toEqual(taken);
        expect(
          (await b.environments.update(env.id, { state: 'creating' }, { owner: 'replica-b' })).state,
        ).toBe('creating');

        // nobody holds it: fenced writes are refused, unfenced ones (user requests) go through
        await b.environments.release(env.id, 'replica-b');
        await expect(
          b.environments.update(env.id, { state: 'ready' }, { owner: 'replica-b' }),
        ).rejects.toBeInstanceOf(LeaseLostError);
        expect((await a.environments.update(env.id, { desired: 'absent' })).desired).toBe('absent');
        await expect(
          a.environments.update('env_missing', { state: 'ready' }, { owner: 'replica-a' }),
        ).rejects.toBeInstanceOf(EnvironmentNotFoundError);
      });

      it('gives each environment to exactly one of several replicas claiming at once', async () => {
        const [one, two] = await Promise.all([open(), open()]);
        const envs = await Promise.all(Array.from({ length: 20 }, () => one!.environments.create(newEnv())));
        const contenders = [
          { store: one!, owner: 'a1' },
          { store: two!, owner: 'b1' },
          { store: one!, owner: 'a2' },
          { store: two!, owner: 'b2' },
        ];
        const results = await Promise.all(
          envs.map(async (env) => {
            const wins = await Promise.all(
              contenders.map((c) => c.store.environments.claim(env.id, c.owner, 60_000)),
            );
            return { env, winners: contenders.filter((_, i) => wins[i]).map((c) => c.owner) };
          }),
        );
        for (const { env, winners } of results) {
          expect(winners).toHaveLength(1);
          expect((await two!.environments.get(env.id))?.leaseOwner).toBe(winners[0]);
        }
      });
    });

    describe('events', () => {
      it('lists an environment’s events in order, after a given id', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv());
        const other = await store.environments.create(newEnv());
        const at = new Date('2030-01-02T03:04:05.006Z');
        const before = Date.now();
        const e1 = await store.events.append({
          envId: env.id,
          type: 'created',
          state: 'pending',
          message: 'queued',
        });
        await store.events.append({ envId: other.id, type: 'created', state: 'pending', message: 'other' });
        const e2 = await store.events.append({
          envId: env.id,
          type: 'note',
          state: null,
          message: 'ünï "quoted"',
          at,
        });
        const e3 = await store.events.append({ envId: env.id, type: 'state', state: 'ready', message: '' });

        expect(e1).toEqual({
          id: expect.any(Number),
          envId: env.id,
          type: 'created',
          state: 'pending',
          message: 'queued',
          at: expect.any(Date),
        });
        expect(e1.at.getTime()).toBeGreaterThanOrEqual(before);
        expect(e2.at).toEqual(at);
        expect(e2.id).toBeGreaterThan(e1.id);
        expect(e3.id).toBeGreaterThan(e2.id);

        expect(await store.events.list(env.id)).toEqual([e1, e2, e3]);
        expect(await store.events.list(env.id, { afterId: e1.id })).toEqual([e2, e3]);
        expect(await store.events.list(env.id, { afterId: e3.id })).toEqual([]);
        expect(await store.events.list(env.id, { afterId: 0 })).toEqual([e1, e2, e3]);
        expect((await store.events.list(other.id)).map((e) => e.message)).toEqual(['other']);
        expect(await store.events.list('env_missing')).toEqual([]);
      });

      it('replaces NUL characters instead of failing the insert', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv());
        const event = await store.events.append({
          envId: env.id,
          type: 'log',
          state: null,
          message: '\u0000binary\u0000 out\u0000put',
        });
        expect(event.message).toBe('\uFFFDbinary\uFFFD out\uFFFDput');
        expect(await store.events.list(env.id)).toEqual([event]);
      });

      it('prunes all but the newest events of each environment, keeping cursors valid', async () => {
        const store = await open();
        const busy = await store.environments.create(newEnv());
        const quiet = await store.environments.create(newEnv());
        const append = (envId: string, message: string) =>
          store.events.append({ envId, type: 'note', state: null, message });
        const busyEvents = [];
        for (let i = 0; i < 5; i += 1) {
          busyEvents.push(await append(busy.id, `busy ${i}`));
          if (i < 2) await append(quiet.id, `quiet ${i}`);
        }
        expect(await store.events.prune({ maxPerEnv: 3 })).toBe(2);
        expect(await store.events.list(busy.id)).toEqual(busyEvents.slice(2));
        expect((await store.events.list(quiet.id)).map((e) => e.message)).toEqual(['quiet 0', 'quiet 1']);
        expect(await store.events.prune({ maxPerEnv: 3 })).toBe(0);

        expect(await store.events.prune({ maxPerEnv: 0 })).toBe(5);
        expect(await store.events.list(busy.id)).toEqual([]);
        // ids are never re-used, so a reader's cursor from before still finds what comes next
        const next = await append(busy.id, 'after');
        expect(await store.events.list(busy.id, { afterId: busyEvents.at(-1)!.id })).toEqual([next]);
        await expect(store.events.prune({ maxPerEnv: -1 })).rejects.toThrow(RangeError);
      });

      it('keeps every state transition when pruning, however many other events there are', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv());
        const ready = await store.events.append({
          envId: env.id,
          type: 'state',
          state: 'ready',
          message: 'ready',
        });
        for (let i = 0; i < 4; i += 1) {
          await store.events.append({ envId: env.id, type: 'progress', state: null, message: `p ${i}` });
        }
        expect(await store.events.prune({ maxPerEnv: 1 })).toBe(3);
        expect((await store.events.list(env.id)).map((e) => e.message)).toEqual([ready.message, 'p 3']);
      });

      it('counts environments by state without reading them', async () => {
        const store = await open();
        const a = await store.environments.create(newEnv());
        await store.environments.create(newEnv());
        await store.environments.update(a.id, { state: 'ready' });
        const counts = await store.environments.countByState();
        expect(counts.ready).toBeGreaterThanOrEqual(1);
        expect(counts.pending).toBeGreaterThanOrEqual(1);
        expect(Object.values(counts).every((n) => Number.isInteger(n))).toBe(true);
      });

      it('refuses events of an environment that does not exist', async () => {
        const store = await open();
        await expect(
          store.events.append({ envId: 'env_missing', type: 'x', state: null, message: '' }),
        ).rejects.toThrow();
      });
    });

    describe('tokens', () => {
      it('creates tokens, verifies them by hash, and stores no plain token', async () => {
        const store = await open();
        expect(await store.tokens.count()).toBe(0);
        const before = Date.now();
        const { token, record } = await store.tokens.create({
          name: 'ci',
          scopes: ['envs:write', 'envs:read'],
        });
        const second = await store.tokens.create({ name: 'admin', scopes: [] });
        expect(token).toMatch(/^mfy_[A-Za-z0-9_-]{43}$/);
        expect(second.token).not.toBe(token);
        expect(record).toEqual({
          id: expect.any(String),
          name: 'ci',
          scopes: ['envs:write', 'envs:read'],
          project: null,
          createdAt: expect.any(Date),
          expiresAt: null,
          revokedAt: null,
          parentId: null,
        });
        expect(record.createdAt.getTime()).toBeGreaterThanOrEqual(before);
        expect(await store.tokens.count()).toBe(2);

        expect(await store.tokens.verify(token)).toEqual(record);
        expect(await store.tokens.verify(second.token)).toEqual(second.record);
        const flipped = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
        expect(await store.tokens.verify(flipped)).toBeNull();
        expect(await store.tokens.verify(token.slice(4))).toBeNull();
        expect(await store.tokens.verify('')).toBeNull();
        expect(await store.tokens.verify(`${token} `)).toBeNull();

        const stored = JSON.stringify(await database.rows('select * from tokens'));
        expect(stored).not.toContain(token);
        expect(stored).not.toContain(token.slice(4));
        expect(stored).not.toContain(second.token.slice(4));
        expect(stored).toContain(createHash('sha256').update(token).digest('hex'));
      });

      it('adopts a token the operator made once, at once from two callers, and never undoes a revocation', async () => {
        const store = await open();
        const plain = `mfy_${'a1B2_c3-D4'.repeat(4)}xyz`;
        const admin = { name: 'admin (deployment)', scopes: ['admin'] };
        const adopted = await Promise.all([
          store.tokens.adopt(plain, admin),
          store.tokens.adopt(plain, admin),
        ]);
        expect(adopted.sort()).toEqual([false, true]);
        expect(await store.tokens.count()).toBe(1);
        const record = await store.tokens.verify(plain);
        expect(record).toMatchObject({ name: 'admin (deployment)', scopes: ['admin'], revokedAt: null });
        expect(JSON.stringify(await database.rows('select * from tokens'))).not.toContain(plain);
        await store.tokens.revoke(record!.id);
        expect(await store.tokens.adopt(plain, admin)).toBe(false);
        expect(await store.tokens.verify(plain)).toBeNull();
      });

      it('binds tokens to a project, lets them expire, and revokes them', async () => {
        const store = await open();
        const expiresAt = new Date('2031-01-01T00:00:00.000Z');
        const scoped = await store.tokens.create({
          name: 'deploy',
          scopes: ['write'],
          project: 'shop',
          expiresAt,
        });
        const admin = await store.tokens.create({
          name: 'admin',
          scopes: ['admin'],
          project: null,
          expiresAt: null,
        });
        const reader = await store.tokens.create({ name: 'reader', scopes: ['read'] });
        expect(scoped.record).toMatchObject({ project: 'shop', expiresAt, revokedAt: null });
        expect(await store.tokens.get(scoped.record.id)).toEqual(scoped.record);
        expect(await store.tokens.get('tok_missing')).toBeNull();

        // valid until its expiry, not at it
        expect(await store.tokens.verify(scoped.token, new Date(expiresAt.getTime() - 1))).toEqual(
          scoped.record,
        );
        expect(await store.tokens.verify(scoped.token, expiresAt)).toBeNull();
        expect(await store.tokens.verify(scoped.token, new Date('2040-01-01T00:00:00.000Z'))).toBeNull();
        expect(await store.tokens.verify(scoped.token)).toEqual(scoped.record);
        expect(await store.tokens.verify(admin.token, new Date('2999-01-01T00:00:00.000Z'))).toEqual(
          admin.record,
        );

        const before = Date.now();
        expect(await store.tokens.revoke(reader.record.id)).toBe(true);
        expect(await store.tokens.revoke(reader.record.id)).toBe(false);
        expect(await store.tokens.revoke('tok_missing')).toBe(false);
        expect(await store.tokens.verify(reader.token)).toBeNull();
        const revoked = await store.tokens.get(reader.record.id);
        expect(revoked?.revokedAt?.getTime()).toBeGreaterThanOrEqual(before);
        expect(revoked?.revokedAt?.getTime()).toBeLessThanOrEqual(Date.now());

        expect((await store.tokens.list()).map((t) => t.name)).toEqual(['deploy', 'admin']);
        expect(await store.tokens.list({ includeRevoked: true })).toEqual([
          scoped.record,
          admin.record,
          revoked,
        ]);
        expect(await store.tokens.count()).toBe(3);
      });
    });

    describe('kept logs', () => {
      it('keeps one text per workload, replaced on save, NULs replaced', async () => {
        const store = await open();
        const env = await store.environments.create(newEnv());
        const other = await store.environments.create(newEnv());
        const before = Date.now();
        await store.logs.save(env.id, 'web', 'listening on :3000\nkilled\n');
        await store.logs.save(env.id, 'db', 'bin\u0000ary');
        await store.logs.save(other.id, 'web', 'other');
        const kept = await store.logs.list(env.id);
        expect(kept).toEqual([
          { envId: env.id, workload: 'db', text: 'bin\uFFFDary', at: expect.any(Date) },
          { envId: env.id, workload: 'web', text: 'listening on :3000\nkilled\n', at: expect.any(Date) },
        ]);
        expect(kept[0]!.at.getTime()).toBeGreaterThanOrEqual(before);

        await store.logs.save(env.id, 'web', 'second crash');
        const replaced = await store.logs.list(env.id);
        expect(replaced.map((k) => [k.workload, k.text])).toEqual([
          ['db', 'bin\uFFFDary'],
          ['web', 'second crash'],
        ]);
        expect(replaced[1]!.at.getTime()).toBeGreaterThanOrEqual(kept[1]!.at.getTime());
        expect((await store.logs.list(other.id)).map((k) => k.text)).toEqual(['other']);
        expect(await store.logs.list('env_missing')).toEqual([]);
        await expect(store.logs.save('env_missing', 'web', 'x')).rejects.toThrow();
      });
    });

    describe('snapshots', () => {
      it('keeps names unique per project, marks ready, never moves a use backward', async () => {
        const store = await open();
        const input = (id: string, project: string, name: string) => ({
          id,
          project,
          name,
          seedKey: name === 'golden' ? null : 'k'.repeat(64),
          volume: 'db-data',
          sourceEnv: { id: 'env1', name: 'shop' },
          owner: 'replica-a',
        });
        const made = await store.snapshots.create(input('s1', 'shop', 'db-data-kkk'));
        expect(made).toMatchObject({ state: 'creating', owner: 'replica-a', sizeBytes: null });
        await expect(store.snapshots.create(input('s2', 'shop', 'db-data-kkk'))).rejects.toBeInstanceOf(
          SnapshotNameTakenError,
        );
        await store.snapshots.create(input('s3', 'blog', 'db-data-kkk')); // another project: its own names
        await store.snapshots.create(input('s4', 'shop', 'golden'));
        expect(await store.snapshots.markReady('s1', 5 * 1024 ** 3)).toBe(true); // past 32 bits
        expect(await store.snapshots.markReady('gone', 1)).toBe(false);
        expect(await store.snapshots.findByName('shop', 'db-data-kkk')).toMatchObject({
          id: 's1',
          state: 'ready',
          owner: null,
          sizeBytes: 5 * 1024 ** 3,
          sourceEnv: { id: 'env1', name: 'shop' },
        });
        expect((await store.snapshots.list('shop')).map((s) => s.name)).toEqual(['db-data-kkk', 'golden']);
        expect((await store.snapshots.list()).map((s) => s.id)).toEqual(['s3', 's1', 's4']);
        const later = new Date(Date.now() + 60_000);
        await store.snapshots.touch('s1', later);
        await store.snapshots.touch('s1', new Date(2020, 0, 1));
        expect((await store.snapshots.get('s1'))?.lastUsedAt).toEqual(later);
        await store.snapshots.delete('s1');
        expect(await store.snapshots.get('s1')).toBeNull();
        expect(await store.snapshots.findByName('shop', 'db-data-kkk')).toBeNull();
      });
    });

    describe('built images', () => {
      it('lists images least recently used first, and never moves a use backward', async () => {
        const store = await open();
        const t = (minute: number) => new Date(Date.UTC(2020, 0, 1, 0, minute));
        await store.images.touch('mayfly/web:aaa', 'shop', t(10));
        await store.images.touch('mayfly/api:bbb', 'shop', t(5));
        await store.images.touch('mayfly/job:ccc', 'blog', t(7));
        const refs = async () => (await store.images.list()).map((image) => image.ref);
        expect(await store.images.list()).toEqual([
          { ref: 'mayfly/api:bbb', project: 'shop', lastUsedAt: t(5) },
          { ref: 'mayfly/job:ccc', project: 'blog', lastUsedAt: t(7) },
          { ref: 'mayfly/web:aaa', project: 'shop', lastUsedAt: t(10) },
        ]);
        // reused later, by another project
        await store.images.touch('mayfly/api:bbb', 'blog', t(20));
        expect(await refs()).toEqual(['mayfly/job:ccc', 'mayfly/web:aaa', 'mayfly/api:bbb']);
        // a late report of an older use changes nothing
        await store.images.touch('mayfly/api:bbb', 'shop', t(1));
        expect((await store.images.list()).at(-1)).toEqual({
          ref: 'mayfly/api:bbb',
          project: 'blog',
          lastUsedAt: t(20),
        });
        // default: now
        const before = Date.now();
        await store.images.touch('mayfly/job:ccc', 'blog');
        const touched = (await store.images.list()).at(-1);
        expect(touched?.ref).toBe('mayfly/job:ccc');
        expect(touched?.lastUsedAt.getTime()).toBeGreaterThanOrEqual(before);

        await store.images.delete('mayfly/web:aaa');
        await store.images.delete('mayfly/none:zzz');
        expect(await refs()).toEqual(['mayfly/api:bbb', 'mayfly/job:ccc']);
      });
    });

    describe('migrations', () => {
      it('migrates a new database once, even when replicas open it at the same time', async () => {
        const stores = await Promise.all([open(), open(), open()]);
        const env = await stores[0]!.environments.create(newEnv({ plan: PLAN }));
        expect(await stores[2]!.environments.get(env.id)).toEqual(env);
        expect(await database.rows('select name from mayfly_migration order by name')).toEqual([
          { name: '0001-initial' },
          { name: '0002-settings' },
          { name: '0003-hardening' },
          { name: '0004-previews' },
          { name: '0005-sandboxes' },
          { name: '0006-sandbox-templates' },
          { name: '0007-replicas' },
          { name: '0008-dashboard-sessions' },
          { name: '0009-deliveries-and-readiness' },
          { name: '0010-environment-origin' },
          { name: '0011-snapshots' },
          { name: '0012-fork-previews-origin' },
        ]);
        // one installation, one id, whichever replica made it
        expect(new Set(stores.map((s) => s.instanceId)).size).toBe(1);
        expect(stores[0]!.instanceId).toMatch(/^[0-9a-f]{12}$/);
        // and one secret per purpose, whichever replica asked first
        const secrets = await Promise.all(stores.map((s) => s.secret('test')));
        expect(new Set(secrets.map((b) => b.toString('hex'))).size).toBe(1);
        expect(secrets[0]!.length).toBe(32);
        expect((await stores[1]!.secret('other')).equals(secrets[0]!)).toBe(false);
      });

      it('keeps the data and applies nothing again on reopen', async () => {
        const first = await database.open();
        const env = await first.environments.create(
          newEnv({
            plan: PLAN,
            origin: {
              createdBy: 'preview of pull request #7',
              pullRequest: { number: 7, url: 'https://forge.example/o/r/pull/7' },
            },
          }),
        );
        expect(env.origin?.pullRequest?.number).toBe(7);
        const event = await first.events.append({
          envId: env.id,
          type: 'created',
          state: 'pending',
          message: 'hi',
        });
        const { token } = await first.tokens.create({ name: 'ci', scopes: ['all'] });
        const { token: e2bKey } = await first.tokens.create({
          name: 'e2b',
          scopes: ['write'],
          format: 'e2b',
        });
        expect(e2bKey).toMatch(/^e2b_[0-9a-f]{64}$/);
        const secret = await first.secret('kept');
        const instanceId = first.instanceId;
        await first.close();

        const again = await open();
        expect(await again.environments.get(env.id)).toEqual(env);
        expect(await again.events.list(env.id)).toEqual([event]);
        expect(await again.tokens.verify(token)).not.toBeNull();
        expect(await again.tokens.verify(e2bKey)).not.toBeNull();
        expect(await again.tokens.verify(`e2b_${'0'.repeat(64)}`)).toBeNull();
        expect((await again.secret('kept')).equals(secret)).toBe(true);
        expect(again.instanceId).toBe(instanceId);
        expect(await database.rows('select name from mayfly_migration order by name')).toEqual([
          { name: '0001-initial' },
          { name: '0002-settings' },
          { name: '0003-hardening' },
          { name: '0004-previews' },
          { name: '0005-sandboxes' },
          { name: '0006-sandbox-templates' },
          { name: '0007-replicas' },
          { name: '0008-dashboard-sessions' },
          { name: '0009-deliveries-and-readiness' },
          { name: '0010-environment-origin' },
          { name: '0011-snapshots' },
          { name: '0012-fork-previews-origin' },
        ]);
      });

      it('upgrades a database an older release left: rows keep working with the new columns', async () => {
        await database.migrateTo('0002-settings');
        const at = '2024-05-06T07:08:09.010Z';
        const plain = `mfy_${'o'.repeat(43)}`;
        await database.rows(
          `insert into environments (id, name, project, kind, state, desired, template_file, template_content,
             template_dir, inputs, plan, failure, ttl_ms, expires_at, created_at, updated_at, lease_owner, lease_until)
           values ('env_old', 'old', 'shop', 'preview', 'ready', 'present', 'mayfly.yaml', 'services: {}',
             null, '{}', null, null, null, null, '${at}', '${at}', null, null)`,
        );
        await database.rows(
          `insert into tokens (id, name, scopes, token_hash, created_at)
           values ('tok_old', 'admin', '["admin"]', '${hashToken(plain)}', '${at}')`,
        );
        const store = await open();
        expect(await store.environments.get('env_old')).toMatchObject({
          name: 'old',
          state: 'ready',
          attempts: 0,
          retryAt: null,
          createdAt: new Date(at),
          origin: null,
        });
        expect(await store.tokens.verify(plain)).toEqual({
          id: 'tok_old',
          name: 'admin',
          scopes: ['admin'],
          project: null,
          createdAt: new Date(at),
          expiresAt: null,
          revokedAt: null,
          parentId: null,
        });
        await store.logs.save('env_old', 'web', 'kept');
        await store.images.touch('mayfly/web:old', 'shop');
        expect(await store.environments.deleteDestroyed(new Date())).toBe(0);
      });

      it('upgrades previews from forks made before their origin said so: they say it now', async () => {
        await database.migrateTo('0011-snapshots');
        const at = '2026-12-01T07:08:09.010Z';
        const env = (id: string, origin: string | null) =>
          database.rows(
            `insert into environments (id, name, project, kind, state, desired, template_file, template_content,
               template_dir, inputs, plan, failure, ttl_ms, expires_at, created_at, updated_at, lease_owner, lease_until, origin)
             values ('${id}', '${id}', 'shop', 'preview', 'ready', 'present', 'mayfly.yaml', 'services: {}',
               null, '{}', null, null, null, null, '${at}', '${at}', null, null, ${origin === null ? 'null' : `'${origin}'`})`,
          );
        const preview = (id: string, envId: string, fromFork: 0 | 1) =>
          database.rows(
            `insert into previews (id, project, number, env_name, head_sha, head_ref, base_ref, from_fork, approved,
               draft, labels, open, received_at, env_id, created_at, updated_at)
             values ('${id}', 'shop', 7, '${envId}', 'abc', 'feature', 'main', ${fromFork}, 1, 0, '[]', 1, '${at}', '${envId}', '${at}', '${at}')`,
          );
        const pullRequest = JSON.stringify({
          createdBy: 'preview of pull request #7',
          pullRequest: { number: 7, url: null },
        });
        await env('env_fork', pullRequest);
        await env('env_fork_bare', null);
        await env('env_own', pullRequest);
        await preview('pv_fork', 'env_fork', 1);
        await preview('pv_fork_bare', 'env_fork_bare', 1);
        await preview('pv_own', 'env_own', 0);
        const store = await open();
        expect((await store.environments.get('env_fork'))!.origin).toEqual({
          createdBy: 'preview of pull request #7',
          pullRequest: { number: 7, url: null },
          fromFork: true,
        });
        expect((await store.environments.get('env_fork_bare'))!.origin).toMatchObject({ fromFork: true });
        expect((await store.environments.get('env_own'))!.origin).not.toHaveProperty('fromFork');
      });
    });
  });
}

/** Polls `condition` until it holds; fails after `timeoutMs`. */
async function waitFor(condition: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(20);
  }
}
