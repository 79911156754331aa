/**
 * GitHub webhooks: signatures checked against a real HMAC of real payloads, and every
 * `pull_request` and `push` example from @octokit/webhooks-examples read into forge-neutral events.
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ChangeRequestEvent, type PushEvent, WebhookPayloadError } from '../forge-event.js';
import { parseGitHubEvent, repositoryOf, verifyGitHubSignature } from './webhook.js';

type Payload = Record<string, unknown> & { action?: string };
interface Definition {
  name: string;
  examples: Payload[];
}

// The package ships one JSON file per GitHub flavour: api.github.com and each GHES version.
const require = createRequire(import.meta.url);
const examplesRoot = path.dirname(path.dirname(require.resolve('@octokit/webhooks-examples')));
const flavours = ['api.github.com', 'ghes-31', 'ghes-32', 'ghes-33', 'ghes-34', 'ghes-35'];
const definitions = new Map(
  flavours.map((f) => [
    f,
    JSON.parse(readFileSync(path.join(examplesRoot, f, 'index.json'), 'utf8')) as Definition[],
  ]),
);
const examplesOf = (event: string, flavour = 'api.github.com'): Payload[] =>
  definitions.get(flavour)?.find((d) => d.name === event)?.examples ?? [];
const allExamplesOf = (event: string) =>
  flavours.flatMap((f) => examplesOf(event, f).map((e, i) => ({ name: `${f} #${i} ${e.action ?? ''}`, e })));

/** A deep copy of the first example of `event` with `action`, for editing. */
function example(event: string, action?: string): Payload {
  const found = examplesOf(event).find((e) => action === undefined || e.action === action);
  if (!found) throw new Error(`no ${event} ${action ?? ''} example`);
  return structuredClone(found);
}

const changeRequest = (payload: unknown) => parseGitHubEvent('pull_request', payload) as ChangeRequestEvent;
const push = (payload: unknown) => parseGitHubEvent('push', payload) as PushEvent;

/** The thrown error, which must be a WebhookPayloadError. */
function payloadError(fn: () => unknown): WebhookPayloadError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WebhookPayloadError);
    return err as WebhookPayloadError;
  }
  throw new Error('expected a WebhookPayloadError, nothing was thrown');
}

const SHA_A = 'a'.repeat(40);

describe('verifyGitHubSignature', () => {
  const secret = 'It’s a Secret to Everybody';
  const body = JSON.stringify(example('pull_request', 'opened'));
  const sign = (key: string, data: string | Buffer, algorithm = 'sha256') =>
    `${algorithm}=${createHmac(algorithm, key).update(data).digest('hex')}`;
  const good = sign(secret, body);

  it('accepts the HMAC-SHA256 of the raw body, as a string or as bytes', async () => {
    expect(await verifyGitHubSignature(secret, body, good)).toBe(true);
    expect(await verifyGitHubSignature(secret, Buffer.from(body, 'utf8'), good)).toBe(true);
  });

  it('refuses a tampered body and a wrong secret', async () => {
    expect(await verifyGitHubSignature(secret, body.replace('"opened"', '"closed"'), good)).toBe(false);
    expect(await verifyGitHubSignature(secret, `${body} `, good)).toBe(false);
    expect(await verifyGitHubSignature('another secret', body, good)).toBe(false);
    expect(await verifyGitHubSignature(secret, body, sign('another secret', body))).toBe(false);
  });

  it('answers false, never throws, for missing or malformed headers', async () => {
    const hex = good.slice('sha256='.length);
    const bad: (string | undefined)[] = [
      undefined,
      '',
      'sha256=',
      hex,
      sign(secret, body, 'sha1'),
      `sha1=${hex}`,
      `SHA256=${hex}`,
      `sha256=${hex.toUpperCase()}`,
      `sha256=${hex.slice(0, 63)}`,
      `sha256=${hex}0`,
      `sha256=${hex.slice(0, 62)}zz`,
      ` ${good}`,
      `${good}, ${good}`,
      `sha256=${'é'.repeat(32)}`,
      'garbage',
    ];
    for (const header of bad) {
      expect(await verifyGitHubSignature(secret, body, header), String(header)).toBe(false);
    }
  });

  it('answers false for an empty secret or body and for a body that is not UTF-8', async () => {
    expect(await verifyGitHubSignature('', body, sign('', body))).toBe(false);
    expect(await verifyGitHubSignature(secret, '', sign(secret, ''))).toBe(false);
    const notUtf8 = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
    expect(await verifyGitHubSignature(secret, notUtf8, sign(secret, notUtf8))).toBe(false);
  });
});

describe('parseGitHubEvent: pull_request', () => {
  const mapping: Record<string, ChangeRequestEvent['action']> = {
    opened: 'opened',
    reopened: 'opened',
    synchronize: 'updated',
    closed: 'closed',
    labeled: 'labeled',
    unlabeled: 'labeled',
    ready_for_review: 'ready',
    converted_to_draft: 'converted_to_draft',
  };

  it.each(allExamplesOf('pull_request'))('reads example $name', ({ e }) => {
    const event = changeRequest(e);
    const pr = e.pull_request as { number: number; head: { sha: string }; base: { ref: string } };
    expect(event).toMatchObject({
      kind: 'change_request',
      forge: 'github',
      repo: (e.repository as { full_name: string }).full_name,
      number: pr.number,
      rawAction: e.action,
      action: mapping[e.action ?? ''] ?? 'other',
      headSha: pr.head.sha,
      baseRef: pr.base.ref,
    });
  });

  it('has every action the examples cover', () => {
    const actions = new Set(allExamplesOf('pull_request').map(({ e }) => e.action));
    for (const a of ['opened', 'reopened', 'synchronize', 'closed', 'labeled', 'ready_for_review']) {
      expect(actions).toContain(a);
    }
  });

  it('maps an opened pull request field by field', () => {
    expect(changeRequest(example('pull_request', 'opened'))).toEqual({
      kind: 'change_request',
      forge: 'github',
      repo: 'Codertocat/Hello-World',
      number: 2,
      action: 'opened',
      rawAction: 'opened',
      headSha: 'ec26c3e57ca3a959ca5aad62de7213c562f8c821',
      headRef: 'changes',
      baseSha: 'f95f852bd8fca8fcc58a9a2d6c842781e32a215e',
      baseRef: 'master',
      fromFork: false,
      draft: false,
      merged: false,
      labels: [],
      title: 'Update the README with new information.',
      url: 'https://github.com/Codertocat/Hello-World/pull/2',
      author: 'Codertocat',
      cloneUrl: 'https://github.com/Codertocat/Hello-World.git',
    });
  });

  it('maps synchronize to updated, labels included', () => {
    const event = changeRequest(example('pull_request', 'synchronize'));
    expect(event.action).toBe('updated');
    expect(event.labels).toEqual(['bug']);
  });

  it('maps closed to closed, merged or not', () => {
    const closed = example('pull_request', 'closed');
    expect(changeRequest(closed)).toMatchObject({ action: 'closed', merged: false });
    const pr = closed.pull_request as Record<string, unknown>;
    pr.merged = true;
    pr.merged_at = '2019-05-15T15:21:18Z';
    expect(changeRequest(closed)).toMatchObject({ action: 'closed', merged: true });
    pr.merged = null; // some deliveries leave it null; merged_at still tells
    expect(changeRequest(closed)).toMatchObject({ action: 'closed', merged: true });
  });

  it('maps ready_for_review and converted_to_draft, with the draft flag', () => {
    expect(changeRequest(example('pull_request', 'ready_for_review'))).toMatchObject({
      action: 'ready',
      draft: false,
    });
    expect(changeRequest(example('pull_request', 'converted_to_draft'))).toMatchObject({
      action: 'converted_to_draft',
      draft: true,
    });
    expect(changeRequest(example('pull_request', 'assigned')).action).toBe('other');
  });

  it('sees a pull request from a fork, and one whose fork is gone', () => {
    const fork = example('pull_request', 'opened');
    const head = (fork.pull_request as { head: { repo: Record<string, unknown> } }).head;
    head.repo.full_name = 'Octocoders/Hello-World';
    head.repo.clone_url = 'https://github.com/Octocoders/Hello-World.git';
    expect(changeRequest(fork)).toMatchObject({
      repo: 'Codertocat/Hello-World',
      fromFork: true,
      cloneUrl: 'https://github.com/Octocoders/Hello-World.git',
    });
    (fork.pull_request as { head: { repo: unknown } }).head.repo = null;
    expect(changeRequest(fork)).toMatchObject({ fromFork: true, cloneUrl: null });
  });

  it('keeps at most 100 labels', () => {
    const many = example('pull_request', 'labeled');
    (many.pull_request as { labels: unknown }).labels = Array.from({ length: 5000 }, (_, i) => ({
      name: `l${i}`,
    }));
    expect(changeRequest(many).labels).toHaveLength(100);
  });

  it('refuses malformed payloads with a WebhookPayloadError naming the field, not the value', () => {
    /** The opened example with the field at `path` set to `value` (deleted for undefined). */
    const edited = (path: string, value: unknown) => {
      const p = example('pull_request', 'opened');
      const keys = path.split('.');
      const last = keys.pop()!;
      const parent = keys.reduce((o, k) => o[k] as Record<string, unknown>, p as Record<string, unknown>);
      if (value === undefined) delete parent[last];
      else parent[last] = value;
      return p;
    };
    const cases: [unknown, string][] = [
      [null, '(root)'],
      [[], '(root)'],
      ['{"action":"opened"}', '(root)'],
      [edited('pull_request.head', undefined), 'pull_request.head'],
      [edited('pull_request.head.sha', 'not-a-sha-1234'), 'pull_request.head.sha'],
      [edited('pull_request.head.sha', 'abc123'), 'pull_request.head.sha'],
      [edited('pull_request.base.sha', 'g'.repeat(40)), 'pull_request.base.sha'],
      [edited('pull_request.number', '2'), 'pull_request.number'],
      [edited('pull_request.number', -1), 'pull_request.number'],
      [edited('pull_request.number', 1.5), 'pull_request.number'],
      [edited('pull_request.head.ref', 'x'.repeat(2000)), 'pull_request.head.ref'],
      [edited('pull_request.head.ref', '--upload-pack=evil'), 'pull_request.head.ref'],
      [edited('pull_request.head.ref', 'a..b'), 'pull_request.head.ref'],
      [edited('pull_request.head.ref', 'a\nb'), 'pull_request.head.ref'],
      [edited('pull_request.head.repo.clone_url', 'file:///etc/passwd'), 'pull_request.head.repo.clone_url'],
      [edited('pull_request.head.repo.clone_url', 'ext::sh -c evil'), 'pull_request.head.repo.clone_url'],
      [edited('pull_request.labels', 'bug'), 'pull_request.labels'],
      [edited('pull_request.labels', [{ name: 7 }]), 'pull_request.labels.0.name'],
      [edited('pull_request.title', 't'.repeat(100_000)), 'pull_request.title'],
      [edited('repository', { full_name: '../../etc' }), 'repository.full_name'],
      [edited('repository', { full_name: 'a/b/c' }), 'repository.full_name'],
      [edited('repository', { full_name: '-o/x' }), 'repository.full_name'],
      [edited('repository', undefined), 'repository'],
      [edited('action', 7), 'action'],
    ];
    for (const [payload, field] of cases) {
      const err = payloadError(() => parseGitHubEvent('pull_request', payload));
      expect(err.message, field).toContain(`pull_request payload: ${field}:`);
      for (const value of ['not-a-sha', 'upload-pack', 'passwd', 'etc', 'evil', 'ttttt']) {
        expect(err.message).not.toContain(value);
      }
    }
  });

  it('never throws anything else, even for payloads no JSON parser makes', () => {
    const hostile = {};
    Object.defineProperty(hostile, 'pull_request', {
      enumerable: true,
      get() {
        throw new RangeError('boom');
      },
    });
    payloadError(() => parseGitHubEvent('pull_request', hostile));
    expect(repositoryOf(hostile)).toBeNull();
  });
});

describe('parseGitHubEvent: push', () => {
  it.each(allExamplesOf('push'))('reads example $name', ({ e }) => {
    const event = push(e);
    expect(event).toMatchObject({ kind: 'push', forge: 'github', repo: 'Codertocat/Hello-World' });
    expect(event.after).toBe(e.after);
  });

  it('reads a tag push (no branch) and a tag deletion', () => {
    const [created, deleted] = [examplesOf('push')[0], examplesOf('push')[1]];
    expect(push(created)).toEqual({
      kind: 'push',
      forge: 'github',
      repo: 'Codertocat/Hello-World',
      branch: null,
      after: '6113728f27ae82c7b1a177c8d03f9e96e0adf246',
      before: null,
      deleted: false,
      changedPaths: null,
    });
    expect(push(deleted)).toMatchObject({
      branch: null,
      deleted: true,
      before: '6113728f27ae82c7b1a177c8d03f9e96e0adf246',
      changedPaths: null,
    });
  });

  it('reads a new branch: no before, changed paths unknown', () => {
    const created = examplesOf('push').find((e) => e.ref === 'refs/heads/master');
    expect(push(created)).toMatchObject({
      branch: 'master',
      before: null,
      deleted: false,
      changedPaths: null,
    });
  });

  /** The new-branch example turned into an ordinary push of `commits` on top of another commit. */
  const update = (commits: unknown[], extra: Payload = {}) => {
    const p = structuredClone(examplesOf('push').find((e) => e.ref === 'refs/heads/master')!);
    return { ...p, before: SHA_A, created: false, commits, ...extra };
  };

  it('lists the changed paths of an ordinary push', () => {
    const [commit] =
      (examplesOf('push').find((e) => e.ref === 'refs/heads/master')!.commits as object[]) ?? [];
    const event = push(
      update([commit, { ...commit, added: ['b.txt'], modified: ['README.md'], removed: ['old/c.txt'] }]),
    );
    expect(event).toMatchObject({ branch: 'master', before: SHA_A, deleted: false });
    expect(event.changedPaths?.sort()).toEqual(['README.md', 'b.txt', 'old/c.txt']);
  });

  it('gives up on changed paths when the payload may not list them all', () => {
    const commit = { id: SHA_A, added: ['a'], modified: [], removed: [] };
    expect(push(update(Array(19).fill(commit))).changedPaths).toEqual(['a']);
    expect(push(update(Array(20).fill(commit))).changedPaths).toBeNull();
    expect(push(update([commit], { forced: true })).changedPaths).toBeNull();
    const files = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}/${i}`);
    expect(push(update([{ ...commit, modified: files(3000, 'm') }])).changedPaths).toBeNull();
    const wide = [1, 2, 3, 4].map((k) => ({ ...commit, added: files(2999, `c${k}`) }));
    expect(push(update(wide)).changedPaths).toBeNull();
    expect(push(update(wide.slice(0, 3))).changedPaths).toHaveLength(3 * 2999);
  });

  it('ignores pushes to refs that are neither branches nor tags', () => {
    expect(parseGitHubEvent('push', update([], { ref: 'refs/notes/commits' }))).toEqual({
      kind: 'ignored',
      forge: 'github',
      event: 'push',
      repo: 'Codertocat/Hello-World',
    });
  });

  it('refuses malformed push payloads', () => {
    const cases: [unknown, string][] = [
      [update([], { after: 'HEAD' }), 'after'],
      [update([], { before: 42 }), 'before'],
      [update([], { ref: 'refs/heads/-x/../y' }), 'ref'],
      [update([], { commits: 'many' }), 'commits'],
      [update([{ added: [1] }]), 'commits.0.added.0'],
      [update([{ modified: 'README.md' }]), 'commits.0.modified'],
      [update([], { repository: null }), 'repository'],
    ];
    for (const [payload, field] of cases) {
      expect(payloadError(() => parseGitHubEvent('push', payload)).message).toContain(
        `push payload: ${field}:`,
      );
    }
  });
});

describe('parseGitHubEvent: other events', () => {
  it('reads ping, for a repository hook and an organization hook', () => {
    const pings = examplesOf('ping');
    expect(parseGitHubEvent('ping', pings[0])).toEqual({
      kind: 'ping',
      forge: 'github',
      repo: 'Octocoders/Hello-World',
    });
    const orgPing = pings.find((p) => !('repository' in p));
    expect(parseGitHubEvent('ping', orgPing)).toEqual({ kind: 'ping', forge: 'github', repo: null });
  });

  it('ignores other events, with their repository when there is one', () => {
    for (const issue of examplesOf('issues')) {
      expect(parseGitHubEvent('issues', issue)).toEqual({
        kind: 'ignored',
        forge: 'github',
        event: 'issues',
        repo: (issue.repository as { full_name: string }).full_name,
      });
    }
    expect(parseGitHubEvent('x'.repeat(10_000), 'not an object')).toEqual({
      kind: 'ignored',
      forge: 'github',
      event: 'x'.repeat(100),
      repo: null,
    });
  });
});

describe('repositoryOf', () => {
  it('finds repository.full_name without throwing', () => {
    expect(repositoryOf(example('pull_request', 'opened'))).toBe('Codertocat/Hello-World');
    expect(repositoryOf({ repository: { full_name: 'octo-org/.github' } })).toBe('octo-org/.github');
    for (const bad of [
      null,
      undefined,
      'Codertocat/Hello-World',
      [],
      {},
      { repository: null },
      { repository: 'a/b' },
      { repository: { full_name: 7 } },
      { repository: { full_name: 'no-slash' } },
      { repository: { full_name: '../x' } },
      { repository: { full_name: 'a/..' } },
      { repository: { full_name: `a/${'b'.repeat(2000)}` } },
    ]) {
      expect(repositoryOf(bad)).toBeNull();
    }
  });
});
