/**
 * Sandbox templates: an image plus the defaults a sandbox of it gets. The built-in ones (`base`,
 * `code`) are Dockerfiles in `packages/server/sandbox-templates/`, built on first use through the
 * same content-addressed path as environment images (an unchanged Dockerfile is never rebuilt).
 */
import { randomBytes } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import type { CreateSandboxTemplateRequest } from '@mayfly/contract';
import type * as z from 'zod';
import {
  ConflictError,
  InvalidRequestError,
  NotFoundError,
  QuotaExceededError,
} from '../controller/errors.js';
import { buildContentHash, contentTag } from '../images/content-tag.js';
import { listContextFiles, packContext } from '../images/context-files.js';
import { assertBuildAllowed } from '../images/dockerfile-policy.js';
import type { ImageBuilder } from '../images/image-builder.js';
import type { BuildPlan } from '../plan/plan.js';
import type { Workspaces } from '../sources/workspaces.js';
import type { SandboxTemplateRecord, Store } from '../store/store.js';
import type { IsolationSupport } from './sandbox-runtime.js';

/** Most pids of a gvisor template: its host limit is about ten times that (docker-sandbox-runtime.ts). */
export const GVISOR_MAX_PIDS = 512;

/** A Dockerfile's folder; `tag` is the image it was built as, when known (no need to hash it again). */
export interface BuildSource {
  buildDir: string;
  dockerfile: string;
  tag?: string;
}

/** Template builds at once; more are refused (429) until one is done. */
const MAX_BUILDS = 2;
/** Templates made through the API, at most. */
const MAX_TEMPLATES = 100;
/** A template build taking longer is stopped. */
const BUILD_TIMEOUT_MS = 15 * 60_000;

export interface SandboxTemplate {
  name: string;
  /** Shipped with Mayfly (not stored, not replaceable). */
  builtIn: boolean;
  /** A Dockerfile in a folder (built on first use, and again should the image be collected), or an image. */
  source: BuildSource | { image: string };
  user: string;
  home: string;
  env: Record<string, string>;
  memoryMb: number;
  cpu: number;
  pids: number;
  /**
   * Size of the writable home and of /tmp, each. They are in memory (tmpfs: the only size limit
   * Docker offers on ext4) and count towards the memory limit, so together they stay below it.
   */
  diskMb: number;
  readOnlyRoot: boolean;
  isolation: 'runc' | 'gvisor';
  /** Sandboxes kept ready, unless the server's configuration says otherwise for this template. */
  pool: number;
  createdAt: Date | null;
}

/** Defaults every built-in template shares. */
const DEFAULTS = {
  // uid:gid, so the private home (a tmpfs) is made theirs; the image names it "user".
  user: '1000:1000',
  home: '/home/user',
  env: {},
  memoryMb: 512,
  cpu: 1,
  pids: 256,
  diskMb: 256,
  readOnlyRoot: true,
  isolation: 'runc',
  pool: 0,
  createdAt: null,
} as const;

export function builtInTemplates(dir: string): SandboxTemplate[] {
  return ['base', 'code'].map((name) => ({
    ...DEFAULTS,
    name,
    builtIn: true,
    source: { buildDir: path.join(dir, name), dockerfile: 'Dockerfile' },
  }));
}

function fromRecord(record: SandboxTemplateRecord, workspaces: Workspaces | undefined): SandboxTemplate {
  const { settings } = record;
  return {
    name: record.name,
    builtIn: false,
    source:
      record.source === 'image' || !record.workspace || !workspaces
        ? { image: record.image ?? '' }
        : {
            buildDir: workspaces.sourceDir(record.workspace),
            dockerfile: record.dockerfile ?? 'Dockerfile',
            ...(record.image ? { tag: record.image } : {}),
          },
    user: settings.user,
    home: settings.workdir,
    env: settings.env,
    memoryMb: settings.memoryMb,
    cpu: settings.cpu,
    pids: settings.pids,
    diskMb: settings.diskMb,
    // No size limit on a container's own files exists on this storage: only home and /tmp are written.
    readOnlyRoot: true,
    isolation: settings.isolation,
    pool: settings.pool,
    createdAt: record.createdAt,
  };
}

/**
 * The templates sandboxes are made from: the built-in ones and those made through the API (kept
 * in the store, read at start; this process's changes are seen at once). Resolves a template to an
 * image present where sandboxes run, building it when needed.
 */
export class SandboxTemplates {
  private readonly builtIn: Map<string, SandboxTemplate>;
  private readonly made = new Map<string, SandboxTemplate>();
  /** One build per image at a time, however many sandboxes ask for it. */
  private readonly building = new Map<string, Promise<string>>();
  /** Template builds under way (through {@link put}). */
  private builds = 0;
  /** Content tags of the built-in templates' folders, which do not change while the server runs. */
  private readonly builtInTags = new Map<string, Promise<string>>();

  constructor(
    templates: SandboxTemplate[],
    private readonly images: ImageBuilder,
    private readonly store: Store,
    /** Where uploaded template folders are kept; without it, only images can be named. */
    private readonly workspaces?: Workspaces,
  ) {
    this.builtIn = new Map(templates.map((t) => [t.name, t]));
  }

  /** Reads the templates made through the API. */
  async load(): Promise<void> {
    for (const record of await this.store.sandboxTemplates.list())
      this.made.set(record.name, fromRecord(record, this.workspaces));
  }

  get(name: string): SandboxTemplate | undefined {
    return this.builtIn.get(name) ?? this.made.get(name);
  }

  list(): SandboxTemplate[] {
    return [
      ...this.builtIn.values(),
      ...[...this.made.values()].sort((a, b) => a.name.localeCompare(b.name)),
    ];
  }

  /**
   * Makes a template, or replaces the one of that name: an uploaded folder is built with its
   * Dockerfile now (a failed build changes nothing); a named image must be on the engine.
   */
  async put(
    request: z.output<typeof CreateSandboxTemplateRequest>,
    isolations: IsolationSupport,
    /** Refuses an image a sandbox must not be made from (before anything is stored). */
    checkImage: (image: string) => Promise<void>,
  ): Promise<SandboxTemplate> {
    if (this.builtIn.has(request.name))
      throw new ConflictError(`"${request.name}" is a built-in template: choose another name`);
    if (!isolations.available.includes(request.isolation))
      throw new InvalidRequestError(
        `this server cannot run ${request.isolation} isolation (it has: ${isolations.available.join(', ')}): ${isolations.missing[request.isolation] ?? 'unknown'}`,
      );
    if (request.isolation === 'gvisor' && request.pids > GVISOR_MAX_PIDS)
      throw new InvalidRequestError(
        `a gvisor template may have at most ${GVISOR_MAX_PIDS} pids: gVisor keeps about ten host threads for each`,
      );
    const settings: SandboxTemplateRecord['settings'] = {
      user: request.user,
      workdir: request.workdir,
      env: request.env,
      cpu: request.cpu,
      memoryMb: request.memoryMb,
      pids: request.pids,
      diskMb: request.diskMb,
      isolation: request.isolation,
      pool: request.pool,
    };
    if (!this.made.has(request.name) && this.made.size >= MAX_TEMPLATES)
      throw new QuotaExceededError(
        `this server keeps at most ${MAX_TEMPLATES} sandbox templates: remove one first`,
      );
    let record: Omit<SandboxTemplateRecord, 'createdAt' | 'updatedAt'>;
    if (request.image !== undefined) {
      // Another project's built images (its code, what its build baked in) are not for the taking.
      if (request.image.startsWith('mayfly-build/') && !request.image.startsWith('mayfly-build/sandbox:'))
        throw new InvalidRequestError(
          `image ${request.image} was built for an environment, not for sandboxes`,
        );
      if (!(await this.images.hasImage(request.image)))
        throw new InvalidRequestError(
          `image ${request.image} is not on this server's Docker Engine (nothing is pulled): build or load it first, or upload a folder with a Dockerfile`,
        );
      await checkImage(request.image);
      record = {
        name: request.name,
        source: 'image',
        image: request.image,
        workspace: null,
        dockerfile: null,
        settings,
      };
    } else {
      if (!this.workspaces) throw new InvalidRequestError('this server cannot build templates from folders');
      if (this.builds >= MAX_BUILDS)
        throw new QuotaExceededError(`${MAX_BUILDS} template builds are running: try again when one is done`);
      this.builds++;
      try {
        // Named by a random id only: a long template name must not make it too long.
        const workspace = `sbxtpl-${randomBytes(6).toString('hex')}`;
        const buildDir = await this.workspaces.claimBundle(request.bundle!, workspace);
        const dockerfile = request.dockerfile ?? 'Dockerfile';
        let image: string;
        try {
          image = await this.buildFrom({ buildDir, dockerfile }, AbortSignal.timeout(BUILD_TIMEOUT_MS));
        } catch (err) {
          await this.workspaces.remove(workspace).catch(() => {});
          // Said without the server's own paths.
          const why = (err instanceof Error ? err.message : String(err)).replaceAll(buildDir, '.');
          throw new InvalidRequestError(`building template "${request.name}" failed: ${why}`);
        }
        try {
          await checkImage(image);
        } catch (err) {
          await this.workspaces.remove(workspace).catch(() => {});
          throw err;
        }
        record = { name: request.name, source: 'dockerfile', image, workspace, dockerfile, settings };
      } finally {
        this.builds--;
      }
    }
    const at = new Date();
    const replaced = await this.store.sandboxTemplates.put(record, at);
    if (replaced?.workspace && replaced.workspace !== record.workspace)
      await this.workspaces?.remove(replaced.workspace).catch(() => {});
    // As stored: a replaced template keeps its creation time.
    const template = fromRecord(
      { ...record, createdAt: replaced?.createdAt ?? at, updatedAt: at },
      this.workspaces,
    );
    this.made.set(template.name, template);
    return template;
  }

  /** Forgets a template made through the API (sandboxes of it keep running; its image is left to the collector). */
  async remove(name: string): Promise<void> {
    if (this.builtIn.has(name))
      throw new ConflictError(`"${name}" is a built-in template and cannot be removed`);
    const record = await this.store.sandboxTemplates.get(name);
    if (!record) throw new NotFoundError(`no sandbox template "${name}"`);
    await this.store.sandboxTemplates.remove(name);
    this.made.delete(name);
    if (record.workspace) await this.workspaces?.remove(record.workspace).catch(() => {});
  }

  /** Its image is there already (nothing to build). */
  async built(template: SandboxTemplate): Promise<boolean> {
    return (await this.builtImage(template)) !== null;
  }

  /** The image its sandboxes run, when it is there; `null` while it still has to be built. */
  async builtImage(template: SandboxTemplate): Promise<string | null> {
    const tag = 'image' in template.source ? template.source.image : await this.tagOf(template.source);
    return (await this.images.hasImage(tag)) ? tag : null;
  }

  /** The content tag of a folder: known for a stored template, hashed once for a built-in one. */
  private async tagOf(source: BuildSource): Promise<string> {
    if (source.tag) return source.tag;
    let tag = this.builtInTags.get(source.buildDir);
    if (!tag) {
      tag = this.buildOf(source).then((b) => b.tag);
      tag.catch(() => this.builtInTags.delete(source.buildDir));
      this.builtInTags.set(source.buildDir, tag);
    }
    return tag;
  }

  private async buildOf(source: BuildSource) {
    const build: BuildPlan = { context: source.buildDir, dockerfile: source.dockerfile, args: {} };
    // The folder is an upload: a link must not take the Dockerfile from outside it, and the daemon
    // itself would fetch an `ADD <url>` from the host's network (both refused, as for environments).
    const [context, file] = await Promise.all([
      realpath(build.context),
      realpath(path.join(build.context, build.dockerfile)).catch(() => ''),
    ]);
    if (file !== '' && !file.startsWith(`${context}${path.sep}`))
      throw new InvalidRequestError(`the Dockerfile ${build.dockerfile} is a link out of the folder`);
    await assertBuildAllowed(build);
    const entries = await listContextFiles(build.context, build.dockerfile);
    return { build, entries, tag: contentTag('sandbox', await buildContentHash(build, entries)) };
  }

  async image(template: SandboxTemplate): Promise<string> {
    if ('image' in template.source) return template.source.image;
    const known = await this.tagOf(template.source);
    if (await this.images.hasImage(known)) {
      await this.store.images.touch(known, 'sandbox');
      return known;
    }
    return this.buildFrom(template.source);
  }

  /** The image of a Dockerfile's folder, built unless an image of the same content is there. */
  private async buildFrom(source: BuildSource, signal?: AbortSignal): Promise<string> {
    const { build, entries, tag } = await this.buildOf(source);
    let pending = this.building.get(tag);
    if (!pending) {
      pending = (async () => {
        if (!(await this.images.hasImage(tag))) {
          await this.images.build(tag, build, {
            context: packContext(build.context, entries),
            ...(signal ? { signal } : {}),
          });
        }
        return tag;
      })().finally(() => this.building.delete(tag));
      this.building.set(tag, pending);
    }
    const ref = await pending;
    // Used now: the image collector keeps recently used images.
    await this.store.images.touch(ref, 'sandbox');
    return ref;
  }
}
