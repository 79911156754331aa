/**
 * A fake GitLab REST API (v4) for tests, notes on merge requests only: a real HTTP server on
 * 127.0.0.1 that keeps notes in memory and CHECKS every request against GitLab's documented
 * parameters and the headers a client must send. A request that breaks a rule is answered as
 * GitLab would (400 `{ error }`, 401…) and recorded in `violations`, so a test ends with
 * `expect(gitlab.violations).toEqual([])`. Faults as in the fake GitHub (`failFirst`, `failNext`,
 * `respondNext`, `delayNext`).
 */
import { z } from 'zod';
import { type FakeForgeServer, type Reply, startFakeForgeServer } from './fake-github.js';

export type { CannedResponse, RecordedCall } from './fake-github.js';

export const FAKE_GITLAB_TOKEN = 'glpat-fakeGitLabToken01234567';

export interface FakeGitLabOptions {
  /** The token requests must carry, as `PRIVATE-TOKEN` or `Authorization: Bearer`. Default {@link FAKE_GITLAB_TOKEN}. */
  token?: string;
  /** Answer the first N requests 502. */
  failFirst?: number;
  /** Cap on `per_page` (GitLab's is 100): set it small to test pagination with few notes. */
  maxPerPage?: number;
  /** Serve under a relative URL root (`/gitlab`); `url` includes it. */
  pathPrefix?: string;
  /** Leave out the `Link` header on lists, so only `x-next-page` tells the next page. */
  omitLinkHeader?: boolean;
  /** When given, only these projects (`group/project`) exist; by default all do. */
  projects?: string[];
  /** The username our notes are shown as. Default `mayfly-bot`. */
  username?: string;
}

export interface FakeNote {
  id: number;
  body: string;
}

export interface FakeGitLab extends FakeForgeServer {
  /** The instance URL to give the client (`http://127.0.0.1:PORT[/prefix]`); the API is under `/api/v4`. */
  url: string;
  token: string;
  /** Notes on a merge request, oldest first (system notes included). */
  notes(projectPath: string, iid: number): FakeNote[];
  /** A note by someone else (`username`, default `alice`), or a system note; returns its id. */
  addNote(
    projectPath: string,
    iid: number,
    body: string,
    options?: { username?: string; system?: boolean },
  ): number;
  /** Removes a note, as a user deleting it would; false when there was none. */
  deleteNote(projectPath: string, id: number): boolean;
}

// ---- GitLab's documented parameters (Notes API); unknown keys are refused. ----

/** "body: The content of a note. Limited to 1,000,000 characters." */
const NoteText = z.string().min(1).max(1_000_000);
/** Create new merge request note. */
const CreateNoteBody = z.strictObject({
  body: NoteText,
  created_at: z.string().optional(),
  internal: z.boolean().optional(),
  merge_request_diff_head_sha: z.string().optional(),
});
/** Modify existing merge request note. */
const UpdateNoteBody = z.strictObject({ body: NoteText });

interface StoredNote {
  id: number;
  project: string;
  iid: number;
  body: string;
  username: string;
  system: boolean;
  createdAt: string;
  updatedAt: string;
}

/** Starts a fake GitLab on 127.0.0.1 (a free port). Close it in `afterAll`/`afterEach`. */
export async function startFakeGitLab(options: FakeGitLabOptions = {}): Promise<FakeGitLab> {
  const token = options.token ?? FAKE_GITLAB_TOKEN;
  const prefix = options.pathPrefix ? `/${options.pathPrefix.replace(/^\/+|\/+$/g, '')}` : '';
  const maxPerPage = Math.min(100, options.maxPerPage ?? 100);
  const ours = options.username ?? 'mayfly-bot';
  const projects = options.projects ? new Set(options.projects.map((p) => p.toLowerCase())) : undefined;
  const projectIds = new Map<string, number>();
  const notes: StoredNote[] = [];
  let nextId = 5000;
  const key = (p: string) => p.toLowerCase();
  const projectIdOf = (p: string) => {
    if (!projectIds.has(key(p))) projectIds.set(key(p), projectIds.size + 1);
    return projectIds.get(key(p)) ?? 0;
  };
  const now = () => new Date().toISOString();

  const server = await startFakeForgeServer(options.failFirst ?? 0, (call, violation) => {
    const fail = (status: number, body: Record<string, unknown>, why?: string): Reply => {
      if (why) violation(why);
      return { status, body };
    };
    const { method } = call;

    const privateToken = call.headers['private-token'];
    const bearer = call.headers.authorization;
    if (privateToken !== token && bearer !== `Bearer ${token}`) {
      return fail(
        401,
        { message: '401 Unauthorized' },
        privateToken || bearer
          ? 'PRIVATE-TOKEN / Authorization: Bearer is not the configured token'
          : 'no PRIVATE-TOKEN or Authorization header',
      );
    }
    if (privateToken !== undefined && bearer !== undefined)
      violation('both PRIVATE-TOKEN and Authorization sent');

    const api = `${prefix}/api/v4/`;
    if (!call.pathname.startsWith(api)) {
      return fail(404, { error: '404 Not Found' }, `no such endpoint: ${method} ${call.pathname}`);
    }
    // The project is ONE segment: `group%2Fproject`, or a numeric id.
    const raw = call.pathname.slice(api.length).split('/');
    const [projects_, rawId, mrs, rawIid, notesSeg, rawNoteId, extra] = raw;
    if (
      projects_ !== 'projects' ||
      !rawId ||
      mrs !== 'merge_requests' ||
      !rawIid ||
      !/^\d+$/.test(rawIid) ||
      notesSeg !== 'notes' ||
      extra !== undefined ||
      (rawNoteId !== undefined && !/^\d+$/.test(rawNoteId))
    ) {
      return fail(
        404,
        { error: '404 Not Found' },
        `no such endpoint: ${method} ${call.pathname}` +
          (raw[0] === 'projects' && raw[2] !== 'merge_requests' ? ' (is the project path URL-encoded?)' : ''),
      );
    }
    let project: string | undefined;
    try {
      project = decodeURIComponent(rawId);
    } catch {
      return fail(404, { message: '404 Project Not Found' }, `malformed project id ${rawId}`);
    }
    if (/^\d+$/.test(project)) {
      const wanted = Number(project);
      project = [...projectIds].find(([, id]) => id === wanted)?.[0];
    }
    if (!project || (projects && !projects.has(key(project))))
      return fail(404, { message: '404 Project Not Found' });
    const projectPath = project;
    const iid = Number(rawIid);
    const noteId = rawNoteId === undefined ? undefined : Number(rawNoteId);

    const readBody = <S extends z.ZodType>(schema: S): { data: z.output<S> } | { reply: Reply } => {
      const type = call.headers['content-type'] ?? '';
      if (!/^application\/json\s*(;|$)/i.test(type)) {
        return {
          reply: fail(
            415,
            { error: 'Unsupported Media Type' },
            `Content-Type is ${JSON.stringify(type)}, not application/json`,
          ),
        };
      }
      let json: unknown;
      try {
        json = JSON.parse(call.rawBody);
      } catch {
        return { reply: fail(400, { error: 'body is not valid JSON' }, 'the body is not JSON') };
      }
      const parsed = schema.safeParse(json);
      if (parsed.success) return { data: parsed.data };
      const problems = parsed.error.issues.map((i) => {
        if (i.code === 'unrecognized_keys')
          return `${i.keys.join(', ')} ${i.keys.length > 1 ? 'are' : 'is'} not allowed`;
        const field = i.path.join('.');
        const given = json && typeof json === 'object' ? (json as Record<string, unknown>)[field] : undefined;
        return given === undefined ? `${field} is missing` : `${field} is invalid`;
      });
      return { reply: fail(400, { error: problems.join(', ') }, `body: ${problems.join(', ')}`) };
    };

    const noteJson = (n: StoredNote) => ({
      id: n.id,
      type: null,
      body: n.body,
      attachment: null,
      author: { id: 1, username: n.username, name: n.username, state: 'active' },
      created_at: n.createdAt,
      updated_at: n.updatedAt,
      system: n.system,
      noteable_id: 900 + n.iid,
      noteable_type: 'MergeRequest',
      project_id: projectIdOf(n.project),
      resolvable: false,
      confidential: false,
      internal: false,
      noteable_iid: n.iid,
      commands_changes: {},
    });
    const ofThisMr = (n: StoredNote) => key(n.project) === key(projectPath) && n.iid === iid;

    if (noteId === undefined && method === 'GET') {
      const perPage = Math.min(maxPerPage, positiveInt(call.query.get('per_page')) ?? 20);
      const page = positiveInt(call.query.get('page')) ?? 1;
      const sort = call.query.get('sort') ?? 'desc';
      const orderBy = call.query.get('order_by') ?? 'created_at';
      if (sort !== 'asc' && sort !== 'desc')
        return fail(400, { error: 'sort does not have a valid value' }, `sort=${sort}`);
      if (orderBy !== 'created_at' && orderBy !== 'updated_at') {
        return fail(400, { error: 'order_by does not have a valid value' }, `order_by=${orderBy}`);
      }
      const all = notes.filter(ofThisMr).sort((a, b) => {
        const by =
          orderBy === 'created_at'
            ? a.createdAt.localeCompare(b.createdAt) || a.id - b.id
            : a.updatedAt.localeCompare(b.updatedAt);
        return sort === 'asc' ? by : -by;
      });
      const totalPages = Math.max(1, Math.ceil(all.length / perPage));
      const pageUrl = (p: number) => {
        const u = new URL(`${server.origin}${call.pathname}`);
        for (const [k, v] of call.query) u.searchParams.set(k, v);
        u.searchParams.set('per_page', String(perPage));
        u.searchParams.set('page', String(p));
        return u.href;
      };
      const links = [`<${pageUrl(1)}>; rel="first"`, `<${pageUrl(totalPages)}>; rel="last"`];
      if (page < totalPages) links.unshift(`<${pageUrl(page + 1)}>; rel="next"`);
      if (page > 1) links.unshift(`<${pageUrl(page - 1)}>; rel="prev"`);
      return {
        status: 200,
        headers: {
          'x-page': String(page),
          'x-per-page': String(perPage),
          'x-next-page': page < totalPages ? String(page + 1) : '',
          'x-prev-page': page > 1 ? String(page - 1) : '',
          'x-total': String(all.length),
          'x-total-pages': String(totalPages),
          ...(options.omitLinkHeader ? {} : { link: links.join(', ') }),
        },
        body: all.slice((page - 1) * perPage, page * perPage).map(noteJson),
      };
    }
    if (noteId === undefined && method === 'POST') {
      const read = readBody(CreateNoteBody);
      if ('reply' in read) return read.reply;
      const at = now();
      const n: StoredNote = {
        id: nextId++,
        project: projectPath,
        iid,
        body: read.data.body,
        username: ours,
        system: false,
        createdAt: at,
        updatedAt: at,
      };
      notes.push(n);
      return { status: 201, body: noteJson(n) };
    }
    if (noteId !== undefined && (method === 'GET' || method === 'PUT' || method === 'DELETE')) {
      const read = method === 'PUT' ? readBody(UpdateNoteBody) : undefined;
      if (read && 'reply' in read) return read.reply;
      const n = notes.find((x) => x.id === noteId && ofThisMr(x));
      if (!n) return fail(404, { message: '404 Not found' });
      if (method === 'DELETE') {
        notes.splice(notes.indexOf(n), 1);
        return { status: 204 };
      }
      if (read) {
        n.body = read.data.body;
        n.updatedAt = now();
      }
      return { status: 200, body: noteJson(n) };
    }
    return fail(405, { error: '405 Method Not Allowed' }, `no such endpoint: ${method} ${call.pathname}`);
  });

  return {
    ...server,
    url: `${server.origin}${prefix}`,
    token,
    notes: (projectPath, iid) =>
      notes
        .filter((n) => key(n.project) === key(projectPath) && n.iid === iid)
        .map((n) => ({ id: n.id, body: n.body })),
    addNote: (projectPath, iid, body, extra = {}) => {
      const at = now();
      const n: StoredNote = {
        id: nextId++,
        project: projectPath,
        iid,
        body,
        username: extra.username ?? 'alice',
        system: extra.system ?? false,
        createdAt: at,
        updatedAt: at,
      };
      notes.push(n);
      projectIdOf(projectPath);
      return n.id;
    },
    deleteNote: (projectPath, id) => {
      const i = notes.findIndex((n) => n.id === id && key(n.project) === key(projectPath));
      if (i < 0) return false;
      notes.splice(i, 1);
      return true;
    },
  };
}

function positiveInt(value: string | null): number | undefined {
  return value && /^\d+$/.test(value) && Number(value) > 0 ? Number(value) : undefined;
}
