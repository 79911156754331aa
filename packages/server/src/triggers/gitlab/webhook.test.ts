/**
 * GitLab webhooks: the secret token check, and merge request, push and tag push payloads read into
 * forge-neutral events. The fixtures follow the payloads GitLab documents for webhook events
 * ("Webhook events" in the GitLab docs), trimmed to a realistic few fields each.
 */
import { describe, expect, it } from 'vitest';
import { type ChangeRequestEvent, type PushEvent, WebhookPayloadError } from '../forge-event.js';
import { parseGitLabEvent, repositoryOf, verifyGitLabToken } from './webhook.js';

const HEAD = 'da1560886d4f094c3e6c9ef40349f7d38b5d27d7';
const OLD = '95790bf891e76fee5e1747ab589903a6a1f80f22';
const ZERO = '0'.repeat(40);

const project = (id: number, path: string) => ({
  id,
  name: path.split('/').at(-1),
  description: 'Aut reprehenderit ut est.',
  web_url: `https://gitlab.example.com/${path}`,
  avatar_url: null,
  git_ssh_url: `git@gitlab.example.com:${path}.git`,
  git_http_url: `https://gitlab.example.com/${path}.git`,
  namespace: 'GitlabHQ',
  visibility_level: 20,
  path_with_namespace: path,
  default_branch: 'main',
  ci_config_path: null,
});

const TARGET = project(14, 'gitlabhq/gitlab-test');
const label = (id: number, title: string) => ({
  id,
  title,
  color: '#ffffff',
  project_id: 14,
  created_at: '2013-12-03T17:15:43Z',
  updated_at: '2013-12-03T17:15:43Z',
  template: false,
  description: null,
  type: 'ProjectLabel',
  group_id: null,
});

/** A `Merge Request Hook` payload; `attributes` and `rest` override its defaults. */
function mergeRequest(attributes: Record<string, unknown> = {}, rest: Record<string, unknown> = {}) {
  const labels = [label(206, 'API'), label(207, 'preview')];
  return {
    object_kind: 'merge_request',
    event_type: 'merge_request',
    user: {
      id: 1,
      name: 'Administrator',
      username: 'root',
      avatar_url: 'https://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=40&d=identicon',
      email: 'admin@example.com',
    },
    project: TARGET,
    object_attributes: {
      id: 99,
      iid: 1,
      target_branch: 'main',
      source_branch: 'ms-viewport',
      source_project_id: 14,
      author_id: 51,
      assignee_ids: [6],
      title: 'MS-Viewport',
      created_at: '2013-12-03T17:23:34Z',
      updated_at: '2013-12-03T17:23:34Z',
      state: 'opened',
      blocking_discussions_resolved: true,
      merge_status: 'unchecked',
      target_project_id: 14,
      description: '',
      url: 'https://gitlab.example.com/gitlabhq/gitlab-test/-/merge_requests/1',
      source: TARGET,
      target: TARGET,
      last_commit: {
        id: HEAD,
        message: 'fixed readme',
        title: 'Update file README.md',
        timestamp: '2012-01-03T23:36:29+02:00',
        url: `https://gitlab.example.com/gitlabhq/gitlab-test/-/commit/${HEAD}`,
        author: { name: 'GitLab dev user', email: 'gitlabdev@dv6700.(none)' },
      },
      work_in_progress: false,
      draft: false,
      labels,
      action: 'open',
      detailed_merge_status: 'not_open',
      ...attributes,
    },
    labels,
    changes: {},
    repository: {
      name: 'Gitlab Test',
      url: 'https://gitlab.example.com/gitlabhq/gitlab-test.git',
      description: 'Aut reprehenderit ut est.',
      homepage: 'https://gitlab.example.com/gitlabhq/gitlab-test',
    },
    ...rest,
  };
}

const commit = (id: string, added: string[], modified: string[], removed: string[]) => ({
  id,
  message: 'Update Catalan translation to e38cb41.',
  title: 'Update Catalan translation to e38cb41.',
  timestamp: '2011-12-12T14:27:31+02:00',
  url: `https://gitlab.example.com/gitlabhq/gitlab-test/-/commit/${id}`,
  author: { name: 'Jordi Mallach', email: 'jordi@softcatala.org' },
  added,
  modified,
  removed,
});

/** A `Push Hook` payload of two commits onto main; `rest` overrides its defaults. */
function pushHook(rest: Record<string, unknown> = {}) {
  return {
    object_kind: 'push',
    event_name: 'push',
    before: OLD,
    after: HEAD,
    ref: 'refs/heads/main',
    ref_protected: true,
    checkout_sha: HEAD,
    message: null,
    user_id: 4,
    user_name: 'John Smith',
    user_username: 'jsmith',
    user_email: 'john@example.com',
    user_avatar:
      'https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=8://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80',
    project_id: 14,
    project: TARGET,
    commits: [
      commit(
        'b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327',
        ['CHANGELOG'],
        ['app/controller/application.rb'],
        [],
      ),
      commit(HEAD, ['CHANGELOG'], ['app/models/user.rb'], ['docs/old.md']),
    ],
    total_commits_count: 2,
    push_options: {},
    repository: {
      name: 'Gitlab Test',
      url: 'git@gitlab.example.com:gitlabhq/gitlab-test.git',
      homepage: 'https://gitlab.example.com/gitlabhq/gitlab-test',
    },
    ...rest,
  };
}

/** A `Tag Push Hook` payload creating v1.0.0. */
const tagPush = (rest: Record<string, unknown> = {}) => ({
  object_kind: 'tag_push',
  event_name: 'tag_push',
  before: ZERO,
  after: '82b3d5ae55f7080f1e6022629cdb57bfae7cccc7',
  ref: 'refs/tags/v1.0.0',
  ref_protected: true,
  checkout_sha: '82b3d5ae55f7080f1e6022629cdb57bfae7cccc7',
  message: 'Tag message',
  user_id: 1,
  user_name: 'John Smith',
  user_username: 'jsmith',
  project_id: 14,
  project: TARGET,
  commits: [],
  total_commits_count: 0,
  push_options: {},
  ...rest,
});

const mr = (payload: unknown) => parseGitLabEvent('Merge Request Hook', payload) as ChangeRequestEvent;
const push = (payload: unknown) => parseGitLabEvent('Push Hook', payload) as PushEvent;

function payloadError(fn: () => unknown): WebhookPayloadError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WebhookPayloadError);
    return err as WebhookPayloadError;
  }
  throw new Error('expected a WebhookPayloadError, nothing was thrown');
}

describe('verifyGitLabToken', () => {
  it('accepts exactly the secret token', () => {
    expect(verifyGitLabToken('s3cret-token', 's3cret-token')).toBe(true);
    for (const header of [
      undefined,
      '',
      's3cret-toke',
      's3cret-token ',
      'S3CRET-TOKEN',
      's3cret-token-longer',
    ]) {
      expect(verifyGitLabToken('s3cret-token', header), String(header)).toBe(false);
    }
  });

  it('never accepts anything for an empty secret', () => {
    expect(verifyGitLabToken('', '')).toBe(false);
    expect(verifyGitLabToken('', undefined)).toBe(false);
  });
});

describe('parseGitLabEvent: merge requests', () => {
  it('maps an opened merge request field by field', () => {
    expect(mr(mergeRequest())).toEqual({
      kind: 'change_request',
      forge: 'gitlab',
      repo: 'gitlabhq/gitlab-test',
      number: 1,
      action: 'opened',
      rawAction: 'open',
      headSha: HEAD,
      headRef: 'ms-viewport',
      baseSha: null,
      baseRef: 'main',
      fromFork: false,
      draft: false,
      merged: false,
      labels: ['API', 'preview'],
      title: 'MS-Viewport',
      url: 'https://gitlab.example.com/gitlabhq/gitlab-test/-/merge_requests/1',
      author: 'root',
      cloneUrl: 'https://gitlab.example.com/gitlabhq/gitlab-test.git',
    });
    expect(mr(mergeRequest({ action: 'reopen' })).action).toBe('opened');
  });

  it('counts an update as new commits only when oldrev is there', () => {
    expect(mr(mergeRequest({ action: 'update', oldrev: OLD }))).toMatchObject({
      action: 'updated',
      rawAction: 'update',
    });
    expect(
      mr(mergeRequest({ action: 'update' }, { changes: { title: { previous: 'a', current: 'b' } } })).action,
    ).toBe('other');
    expect(mr(mergeRequest({ action: 'update', oldrev: null })).action).toBe('other');
  });

  it('reads label and draft changes of an update', () => {
    const labels = {
      labels: { previous: [label(206, 'API')], current: [label(206, 'API'), label(207, 'preview')] },
    };
    expect(mr(mergeRequest({ action: 'update' }, { changes: labels })).action).toBe('labeled');
    const ready = {
      draft: { previous: true, current: false },
      title: { previous: 'Draft: x', current: 'x' },
    };
    expect(mr(mergeRequest({ action: 'update' }, { changes: ready })).action).toBe('ready');
    const toDraft = { draft: { previous: false, current: true } };
    expect(mr(mergeRequest({ action: 'update', draft: true }, { changes: toDraft }))).toMatchObject({
      action: 'converted_to_draft',
      draft: true,
    });
    // new commits win over anything else the update changed
    expect(mr(mergeRequest({ action: 'update', oldrev: OLD }, { changes: labels })).action).toBe('updated');
  });

  it('maps close and merge to closed, merged only for merge', () => {
    expect(mr(mergeRequest({ action: 'close', state: 'closed' }))).toMatchObject({
      action: 'closed',
      merged: false,
    });
    expect(mr(mergeRequest({ action: 'merge', state: 'merged' }))).toMatchObject({
      action: 'closed',
      rawAction: 'merge',
      merged: true,
    });
  });

  it('maps approvals and unknown actions to other', () => {
    for (const action of ['approved', 'unapproved', 'approval', 'unapproval', 'something-new']) {
      expect(mr(mergeRequest({ action })).action).toBe('other');
    }
    const { action: _, ...noAction } = mergeRequest().object_attributes;
    expect(mr({ ...mergeRequest(), object_attributes: noAction })).toMatchObject({
      action: 'other',
      rawAction: '',
    });
  });

  it('sees a merge request from a fork, and clones the fork', () => {
    const fork = project(15, 'contributor/gitlab-test');
    expect(mr(mergeRequest({ source_project_id: 15, source: fork }))).toMatchObject({
      repo: 'gitlabhq/gitlab-test',
      fromFork: true,
      cloneUrl: 'https://gitlab.example.com/contributor/gitlab-test.git',
    });
    // the fork was deleted
    expect(mr(mergeRequest({ source_project_id: null, source: null }))).toMatchObject({
      fromFork: true,
      cloneUrl: null,
    });
  });

  it('reads the older work_in_progress flag, subgroups, and labels from object_attributes', () => {
    const { draft: _, ...old } = mergeRequest({ work_in_progress: true }).object_attributes;
    const { labels: __, ...noTopLabels } = mergeRequest();
    const event = mr({
      ...noTopLabels,
      object_attributes: old,
      project: project(14, 'group/sub.group/deeper/gitlab-test'),
    });
    expect(event).toMatchObject({
      draft: true,
      repo: 'group/sub.group/deeper/gitlab-test',
      labels: ['API', 'preview'],
    });
  });

  it('keeps at most 100 labels', () => {
    const many = Array.from({ length: 1000 }, (_, i) => label(i, `l${i}`));
    expect(mr(mergeRequest({}, { labels: many })).labels).toHaveLength(100);
  });

  it('refuses malformed payloads with a WebhookPayloadError naming the field, not the value', () => {
    const cases: [unknown, string][] = [
      [null, '(root)'],
      [mergeRequest({ last_commit: null }), 'object_attributes.last_commit'],
      [mergeRequest({ last_commit: { id: 'deadbeef' } }), 'object_attributes.last_commit.id'],
      [mergeRequest({ iid: '1' }), 'object_attributes.iid'],
      [mergeRequest({ source_branch: '-evil' }), 'object_attributes.source_branch'],
      [mergeRequest({ target_branch: 'b'.repeat(1025) }), 'object_attributes.target_branch'],
      [mergeRequest({ url: 'javascript:evil()' }), 'object_attributes.url'],
      [
        mergeRequest({ source: { git_http_url: 'ssh://evil@host/x.git' } }),
        'object_attributes.source.git_http_url',
      ],
      [mergeRequest({ oldrev: 'evil' }), 'object_attributes.oldrev'],
      [mergeRequest({}, { project: project(14, 'evil') }), 'project.path_with_namespace'],
      [mergeRequest({}, { project: project(14, '../evil/x') }), 'project.path_with_namespace'],
      [mergeRequest({}, { labels: [{ title: null }] }), 'labels.0.title'],
      [mergeRequest({}, { object_kind: 'push' }), 'object_kind'],
    ];
    for (const [payload, field] of cases) {
      const err = payloadError(() => parseGitLabEvent('Merge Request Hook', payload));
      expect(err.message, field).toContain(`merge_request payload: ${field}:`);
      expect(err.message).not.toContain('evil');
    }
  });
});

describe('parseGitLabEvent: pushes', () => {
  it('reads a push to a branch with its changed paths', () => {
    const event = push(pushHook());
    expect(event).toEqual({
      kind: 'push',
      forge: 'gitlab',
      repo: 'gitlabhq/gitlab-test',
      branch: 'main',
      after: HEAD,
      before: OLD,
      deleted: false,
      changedPaths: expect.any(Array),
    });
    expect(event.changedPaths?.sort()).toEqual([
      'CHANGELOG',
      'app/controller/application.rb',
      'app/models/user.rb',
      'docs/old.md',
    ]);
  });

  it('gives up on changed paths when commits were left out, for a new branch and a deletion', () => {
    expect(push(pushHook({ total_commits_count: 40 })).changedPaths).toBeNull();
    expect(push(pushHook({ total_commits_count: undefined })).changedPaths).toBeNull();
    expect(push(pushHook({ before: ZERO, ref: 'refs/heads/feature/x' }))).toMatchObject({
      branch: 'feature/x',
      before: null,
      changedPaths: null,
    });
    expect(
      push(pushHook({ after: ZERO, checkout_sha: null, commits: [], total_commits_count: 0 })),
    ).toMatchObject({
      branch: 'main',
      deleted: true,
      after: ZERO,
      changedPaths: null,
    });
    const files = Array.from({ length: 10_001 }, (_, i) => `f/${i}`);
    expect(
      push(pushHook({ commits: [commit(HEAD, files, [], [])], total_commits_count: 1 })).changedPaths,
    ).toBeNull();
  });

  it('reads a tag push: no branch', () => {
    expect(parseGitLabEvent('Tag Push Hook', tagPush())).toEqual({
      kind: 'push',
      forge: 'gitlab',
      repo: 'gitlabhq/gitlab-test',
      branch: null,
      after: '82b3d5ae55f7080f1e6022629cdb57bfae7cccc7',
      before: null,
      deleted: false,
      changedPaths: null,
    });
  });

  it('refuses a payload of another kind than its header says, and malformed pushes', () => {
    expect(payloadError(() => parseGitLabEvent('Push Hook', tagPush())).message).toContain(
      'push payload: object_kind:',
    );
    expect(payloadError(() => parseGitLabEvent('Tag Push Hook', pushHook())).message).toContain(
      'tag_push payload: object_kind:',
    );
    const cases: [unknown, string][] = [
      [pushHook({ after: 'main' }), 'after'],
      [pushHook({ ref: 'refs/heads/a b' }), 'ref'],
      [pushHook({ total_commits_count: -1 }), 'total_commits_count'],
      [pushHook({ commits: [{ added: 'x' }], total_commits_count: 1 }), 'commits.0.added'],
      [pushHook({ project: { path_with_namespace: 42 } }), 'project.path_with_namespace'],
      [[], '(root)'],
    ];
    for (const [payload, field] of cases) {
      expect(payloadError(() => push(payload)).message).toContain(`push payload: ${field}:`);
    }
  });
});

describe('parseGitLabEvent: other events', () => {
  it('reads system hooks by their object_kind', () => {
    expect(parseGitLabEvent('System Hook', mergeRequest()).kind).toBe('change_request');
    expect(parseGitLabEvent('System Hook', pushHook()).kind).toBe('push');
    expect(parseGitLabEvent('System Hook', tagPush())).toMatchObject({ kind: 'push', branch: null });
    expect(
      parseGitLabEvent('System Hook', { event_name: 'project_create', path_with_namespace: 'a/b' }),
    ).toEqual({
      kind: 'ignored',
      forge: 'gitlab',
      event: 'System Hook',
      repo: null,
    });
  });

  it('ignores other events, with their project when there is one', () => {
    expect(parseGitLabEvent('Pipeline Hook', { object_kind: 'pipeline', project: TARGET })).toEqual({
      kind: 'ignored',
      forge: 'gitlab',
      event: 'Pipeline Hook',
      repo: 'gitlabhq/gitlab-test',
    });
    expect(parseGitLabEvent('Note Hook', 'not an object')).toEqual({
      kind: 'ignored',
      forge: 'gitlab',
      event: 'Note Hook',
      repo: null,
    });
  });
});

describe('repositoryOf', () => {
  it('finds project.path_with_namespace without throwing', () => {
    expect(repositoryOf(mergeRequest())).toBe('gitlabhq/gitlab-test');
    expect(repositoryOf(pushHook({ project: project(3, 'a/b/c/d') }))).toBe('a/b/c/d');
    const tooDeep = Array.from({ length: 22 }, (_, i) => `g${i}`).join('/');
    for (const bad of [
      null,
      42,
      {},
      { project: null },
      { project: { path_with_namespace: 'single' } },
      { project: { path_with_namespace: 'a//b' } },
      { project: { path_with_namespace: 'a/../b' } },
      { project: { path_with_namespace: tooDeep } },
    ]) {
      expect(repositoryOf(bad)).toBeNull();
    }
  });
});
