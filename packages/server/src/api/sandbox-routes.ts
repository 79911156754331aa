/** `/v1/sandboxes`: isolated machines for untrusted code and agents — commands, files, lifecycle. */
import type { Server } from 'node:http';
import type { Readable } from 'node:stream';
import {
  HIDDEN_TEXT,
  SANDBOX_STATES,
  SandboxFileEntry,
  SandboxPaths,
  SandboxProcess,
  type SandboxState,
  SandboxUsageAnswer,
} from '@mayfly/contract';
import type { FastifyInstance, FastifyReply } from 'fastify';
import * as z from 'zod';
import type { Access } from '../access/access.js';
import { InvalidRequestError } from '../controller/errors.js';
import type { SandboxService } from '../sandbox/sandbox-service.js';
import { requireAccess } from './auth.js';
import { UnauthorizedError } from './errors.js';
import { OneUseTickets } from './one-use-tickets.js';
import { addRoute } from './route.js';

const base = SandboxPaths.sandboxes;
const IdParams = z.object({ id: z.string().min(1).max(64).describe('sandbox id') });
const PidParams = IdParams.extend({
  pid: z.coerce.number().int().positive().describe('process id in the sandbox'),
});
const PathQuery = z.object({
  path: z.string().min(1).max(4096).describe('absolute, or relative to the home'),
});
const EVENTS_MEDIA_TYPE = 'application/x-ndjson';
const RAW = ['application/octet-stream'] as const;
const Ok = z.object({ ok: z.literal(true) });
const Entry = SandboxFileEntry;
const Process = SandboxProcess;

/** The body of a raw upload, or a clear error when it came as something else. */
function rawBody(body: unknown): Readable {
  if (!body || typeof (body as Readable).pipe !== 'function')
    throw new InvalidRequestError('send the bytes as application/octet-stream');
  return body as Readable;
}

const DOWNLOAD_TICKET_TTL_MS = 60_000;

/**
 * `Content-Disposition: attachment` under the path's base name: an ASCII stand-in for old clients
 * and the name itself, percent-encoded (RFC 6266); no control character, quote or slash survives.
 */
export function attachment(filePath: string): string {
  // Controls, and what reorders or hides text (`\u202etxt.exe` would be saved to show as `exe.txt`).
  const name = (filePath.split('/').pop() ?? '').replace(HIDDEN_TEXT, '').trim();
  const saved = name === '' || name === '.' || name === '..' ? 'download' : name;
  const ascii = saved.replace(/[^A-Za-z0-9._-]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(saved)}`;
}

/** Streams `source` as the answer; the client leaving ends it (and the read from the sandbox). */
function stream(reply: FastifyReply, source: Readable): FastifyReply {
  reply.raw.on('close', () => source.destroy());
  reply.send(source);
  reply.raw.flushHeaders();
  return reply;
}

export function registerSandboxRoutes(app: FastifyInstance<Server>, sandboxes: SandboxService): void {
  addRoute(app, {
    method: 'POST',
    url: base,
    scope: 'write',
    summary: 'create a sandbox; it is killed when its timeout runs out',
    body: { json: 'CreateSandboxRequest' },
    response: { status: 201, description: 'running', json: 'SandboxInfo' },
    errors: { 403: 'a token bound to a project', 503: 'the sandbox did not start' },
    handler: async ({ req }) => sandboxes.create(req.body, requireAccess(req)),
  });
  addRoute(app, {
    method: 'GET',
    url: base,
    scope: 'read',
    summary: 'list sandboxes (running and paused unless state says otherwise)',
    query: z.object({
      state: z
        .string()
        .max(64)
        .optional()
        .describe(`comma-separated: ${SANDBOX_STATES.join(', ')}`),
      metadata: z.string().max(4096).optional().describe('url-encoded key=value pairs every one must have'),
    }),
    response: { status: 200, description: 'sandboxes, oldest first', json: { items: 'SandboxInfo' } },
    handler: async ({ query, req }) => {
      const states = query.state?.split(',').map((s) => s.trim()) ?? ['running', 'paused'];
      const bad = states.find((s) => !(SANDBOX_STATES as readonly string[]).includes(s));
      if (bad) throw new InvalidRequestError(`unknown state "${bad}"`);
      const metadata = Object.fromEntries(new URLSearchParams(query.metadata ?? ''));
      return {
        items: await sandboxes.list(requireAccess(req), { states: states as SandboxState[], metadata }),
      };
    },
  });
  addRoute(app, {
    method: 'GET',
    url: SandboxPaths.templates,
    scope: 'read',
    summary: 'sandbox templates, with how many sandboxes of each the warm pool keeps ready',
    response: { status: 200, description: 'templates by name', json: { items: 'SandboxTemplateInfo' } },
    handler: async ({ req }) => ({ items: await sandboxes.templates(requireAccess(req)) }),
  });
  addRoute(app, {
    method: 'POST',
    url: SandboxPaths.templates,
    scope: 'write',
    summary:
      'make a sandbox template, or replace the one of that name: an uploaded folder (a bundle) built with its Dockerfile now, or an image the engine has',
    body: { json: 'CreateSandboxTemplateRequest' },
    response: { status: 201, description: 'made (built)', json: 'SandboxTemplateInfo' },
    errors: {
      400: 'a bad request, a failed build, an image the engine lacks, an isolation class this server cannot run',
      409: 'the name of a built-in template',
    },
    handler: async ({ req }) => sandboxes.putTemplate(req.body, requireAccess(req)),
  });
  addRoute(app, {
    method: 'DELETE',
    url: `${SandboxPaths.templates}/:name`,
    scope: 'write',
    summary: 'forget a sandbox template (its sandboxes keep running)',
    params: z.object({ name: z.string().min(1).max(64).describe('template name') }),
    response: { status: 200, description: 'forgotten', json: Ok },
    errors: { 404: 'no such template', 409: 'a built-in template' },
    handler: async ({ params, req }) => {
      await sandboxes.removeTemplate(params.name, requireAccess(req));
      return { ok: true as const };
    },
  });
  addRoute(app, {
    method: 'GET',
    url: `${base}/:id`,
    scope: 'read',
    summary: 'one sandbox, ended ones too (for their retention period)',
    params: IdParams,
    response: { status: 200, description: 'the sandbox', json: 'SandboxInfo' },
    errors: { 404: 'no such sandbox' },
    handler: async ({ params, req }) => sandboxes.get(params.id, requireAccess(req)),
  });
  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/usage`,
    scope: 'read',
    summary: 'what a running or paused sandbox uses now: CPU time so far, memory, processes',
    description:
      'One reading of the platform’s counters, made when asked (nothing is kept between two). cpuSeconds is cumulative: CPU use in percent of one CPU is 100 × its change between two readings over the change of sampledAt. usage is null where the platform does not count it (Kubernetes: no metrics server is assumed).',
    params: IdParams,
    response: { status: 200, description: 'the reading', json: SandboxUsageAnswer },
    errors: { 404: 'no such sandbox', 409: 'it has ended' },
    handler: async ({ params, req }) => sandboxes.usage(params.id, requireAccess(req)),
  });
  addRoute(app, {
    method: 'DELETE',
    url: `${base}/:id`,
    scope: 'write',
    summary: 'kill a sandbox: everything in it is gone; its record says killed',
    params: IdParams,
    response: { status: 200, description: 'ended', json: 'SandboxInfo' },
    errors: { 404: 'no such sandbox' },
    handler: async ({ params, req }) => {
      await sandboxes.kill(params.id, requireAccess(req));
      return sandboxes.get(params.id, requireAccess(req));
    },
  });
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/timeout`,
    scope: 'write',
    summary: 'its time is up timeoutMs from now (extends or shortens)',
    params: IdParams,
    body: { json: 'SetSandboxTimeoutRequest' },
    response: { status: 200, description: 'the new expiry', json: 'SandboxInfo' },
    errors: { 404: 'no such sandbox', 409: 'it has ended' },
    handler: async ({ params, req }) => sandboxes.setTimeout(params.id, req.body, requireAccess(req)),
  });
  for (const action of ['pause', 'resume'] as const) {
    addRoute(app, {
      method: 'POST',
      url: `${base}/:id/${action}`,
      scope: 'write',
      summary:
        action === 'pause'
          ? 'freeze every process in it, memory kept (its timeout still runs)'
          : 'thaw a paused sandbox',
      params: IdParams,
      response: { status: 200, description: 'its state now', json: 'SandboxInfo' },
      errors: { 404: 'no such sandbox', 409: 'it has ended' },
      handler: async ({ params, req }) => sandboxes[action](params.id, requireAccess(req)),
    });
  }

  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/processes`,
    scope: 'write',
    summary: 'run a command; the answer streams its events (start with pid, stdout, stderr, end)',
    description:
      'One JSON object per line: {"type":"start","pid":N}, {"type":"stdout"|"stderr","data":base64}, and last {"type":"end","exitCode":N,"signal"?,"timedOut"?}. The command goes on if the client leaves; attach again with …/processes/{pid}/stream.',
    params: IdParams,
    body: { json: 'RunCommandRequest' },
    response: { status: 200, description: 'the event stream', mediaType: EVENTS_MEDIA_TYPE },
    errors: {
      400: 'no such command, a working directory that does not exist, a user it is not',
      404: 'no such sandbox',
      409: 'it has ended or is paused',
    },
    handler: async ({ params, req, reply }) =>
      stream(reply, await sandboxes.run(params.id, req.body, requireAccess(req))),
  });
  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/processes`,
    scope: 'read',
    summary: 'commands running in it',
    params: IdParams,
    response: { status: 200, description: 'the processes', json: z.object({ items: z.array(Process) }) },
    errors: { 404: 'no such sandbox', 409: 'it has ended or is paused' },
    handler: async ({ params, req }) => ({ items: await sandboxes.processes(params.id, requireAccess(req)) }),
  });
  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/processes/:pid/stream`,
    scope: 'read',
    summary: "attach to a running command's events from now on",
    params: PidParams,
    response: { status: 200, description: 'the event stream', mediaType: EVENTS_MEDIA_TYPE },
    errors: { 404: 'no such sandbox or process' },
    handler: async ({ params, req, reply }) =>
      stream(reply, await sandboxes.attach(params.id, params.pid, requireAccess(req))),
  });
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/processes/:pid/stdin`,
    scope: 'write',
    summary: "send bytes to a command's stdin (started with stdin: true); close=1 closes it after",
    params: PidParams,
    query: z.object({ close: z.enum(['0', '1']).optional() }),
    body: { mediaTypes: RAW, description: 'the bytes' },
    response: { status: 200, description: 'sent', json: Ok },
    errors: { 404: 'no such sandbox or process' },
    handler: async ({ params, query, req }) => {
      await sandboxes.stdin(
        params.id,
        params.pid,
        rawBody(req.body),
        query.close === '1',
        requireAccess(req),
      );
      return { ok: true as const };
    },
  });
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/processes/:pid/signal`,
    scope: 'write',
    summary: 'send a signal to a command and everything it started',
    params: PidParams,
    body: { json: 'SignalRequest' },
    response: { status: 200, description: 'sent', json: Ok },
    errors: { 404: 'no such sandbox or process' },
    handler: async ({ params, req }) => {
      await sandboxes.signal(params.id, params.pid, req.body, requireAccess(req));
      return { ok: true as const };
    },
  });
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/processes/:pid/resize`,
    scope: 'write',
    summary: "resize a command's terminal (one started with pty); its programs are told (SIGWINCH)",
    params: PidParams,
    body: { json: 'TerminalSize' },
    response: { status: 200, description: 'resized', json: Ok },
    errors: { 400: 'it has no terminal', 404: 'no such sandbox or process' },
    handler: async ({ params, req }) => {
      await sandboxes.resize(params.id, params.pid, req.body, requireAccess(req));
      return { ok: true as const };
    },
  });

  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/files`,
    scope: 'read',
    summary: "a file's bytes",
    params: IdParams,
    query: PathQuery,
    response: { status: 200, description: 'the bytes', mediaType: 'application/octet-stream' },
    errors: { 404: 'no such sandbox or file' },
    handler: async ({ params, query, req, reply }) =>
      stream(reply, await sandboxes.readFile(params.id, query.path, requireAccess(req))),
  });
  // A download the browser saves by itself (streamed to disk, never held in the page): a
  // navigation carries no header, so the page asks for a one-use link with its credentials first.
  const downloads = new OneUseTickets<{
    sandbox: string;
    path: string;
    access: Access;
    stillAllowed: () => Promise<boolean>;
  }>(DOWNLOAD_TICKET_TTL_MS);
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/downloads`,
    scope: 'read',
    summary: 'a one-use link (60 s) that downloads a file as an attachment, for a browser to save',
    params: IdParams,
    query: PathQuery,
    response: { status: 201, description: 'the link', json: z.object({ url: z.string() }) },
    errors: { 404: 'no such sandbox or file', 409: 'it has ended or is paused' },
    handler: async ({ params, query, req }) => {
      const access = requireAccess(req);
      const filePath = query.path;
      // Refused now, with why, rather than as a broken download (and checked again when taken).
      const entry = SandboxFileEntry.parse(
        await sandboxes.fileOp(params.id, 'stat', { path: filePath }, access),
      );
      if (entry.type !== 'file') throw new InvalidRequestError(`${filePath} is not a file`);
      const ticket = downloads.issue({
        sandbox: params.id,
        path: filePath,
        access,
        stillAllowed: req.stillAllowed ?? (async () => true),
      });
      return { url: `${base}/${encodeURIComponent(params.id)}/downloads/${ticket}` };
    },
  });
  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/downloads/:ticket`,
    scope: 'public',
    summary: 'the file of a one-use download link, as an attachment (the link is the credential)',
    params: IdParams.extend({ ticket: z.string().max(64) }),
    response: { status: 200, description: 'the bytes', mediaType: 'application/octet-stream' },
    errors: {
      401: 'an unknown, used or expired download link, or one whose token was revoked',
      404: 'no such sandbox or file',
    },
    handler: async ({ params, req, reply }) => {
      // (Fastify answers HEAD with this route too: a HEAD must not spend the link.)
      if (req.method !== 'GET') return reply.code(405).header('allow', 'GET').send();
      const issued = downloads.take(params.ticket);
      if (!issued || issued.sandbox !== params.id || !(await issued.stillAllowed().catch(() => false)))
        throw new UnauthorizedError('this download link is unknown, used, expired or no longer allowed');
      const bytes = await sandboxes.readFile(issued.sandbox, issued.path, issued.access);
      reply
        .header('content-disposition', attachment(issued.path))
        .header('cache-control', 'no-store')
        // Never shown as a page of this origin, whatever it holds.
        .header('content-security-policy', "sandbox; default-src 'none'");
      const length = bytes.headers['content-length'];
      if (length && /^\d+$/.test(length)) reply.header('content-length', length);
      return stream(reply, bytes);
    },
  });
  addRoute(app, {
    method: 'PUT',
    url: `${base}/:id/files`,
    scope: 'write',
    summary: 'write a file (its folders made); bounded by the sandbox’s disk',
    params: IdParams,
    query: PathQuery,
    body: { mediaTypes: RAW, description: 'the bytes' },
    response: { status: 200, description: 'the file written', json: Entry },
    errors: { 404: 'no such sandbox' },
    handler: async ({ params, query, req }) =>
      sandboxes.writeFile(params.id, query.path, rawBody(req.body), requireAccess(req)),
  });
  addRoute(app, {
    method: 'DELETE',
    url: `${base}/:id/files`,
    scope: 'write',
    summary: 'remove a file or a folder with everything in it',
    params: IdParams,
    query: PathQuery,
    response: { status: 200, description: 'removed', json: Ok },
    errors: { 404: 'no such sandbox or file' },
    handler: async ({ params, query, req }) => {
      await sandboxes.fileOp(params.id, 'remove', { path: query.path }, requireAccess(req));
      return { ok: true as const };
    },
  });
  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/files/stat`,
    scope: 'read',
    summary: 'what a path is (a link is described, not followed)',
    params: IdParams,
    query: PathQuery,
    response: { status: 200, description: 'the entry', json: Entry },
    errors: { 404: 'no such sandbox or file' },
    handler: async ({ params, query, req }) =>
      sandboxes.fileOp(params.id, 'stat', { path: query.path }, requireAccess(req)),
  });
  addRoute(app, {
    method: 'GET',
    url: `${base}/:id/files/list`,
    scope: 'read',
    summary: 'what a folder holds, to a depth',
    params: IdParams,
    query: PathQuery.extend({
      depth: z
        .string()
        .regex(/^\d{1,2}$/)
        .optional(),
    }),
    response: { status: 200, description: 'the entries', json: z.object({ entries: z.array(Entry) }) },
    errors: { 404: 'no such sandbox or folder' },
    handler: async ({ params, query, req }) =>
      sandboxes.fileOp(
        params.id,
        'list',
        { path: query.path, ...(query.depth ? { depth: query.depth } : {}) },
        requireAccess(req),
      ),
  });
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/files/mkdir`,
    scope: 'write',
    summary: 'make a folder and its parents',
    params: IdParams,
    query: PathQuery,
    response: {
      status: 200,
      description: 'whether it was made now',
      json: z.object({ created: z.boolean() }),
    },
    errors: { 404: 'no such sandbox' },
    handler: async ({ params, query, req }) =>
      sandboxes.fileOp(params.id, 'mkdir', { path: query.path }, requireAccess(req)),
  });
  addRoute(app, {
    method: 'POST',
    url: `${base}/:id/files/rename`,
    scope: 'write',
    summary: 'move a file or folder',
    params: IdParams,
    query: PathQuery.extend({ to: z.string().min(1).max(4096) }),
    response: { status: 200, description: 'where it is now', json: Entry },
    errors: { 404: 'no such sandbox or file' },
    handler: async ({ params, query, req }) =>
      sandboxes.fileOp(params.id, 'rename', { path: query.path, to: query.to }, requireAccess(req)),
  });
}
