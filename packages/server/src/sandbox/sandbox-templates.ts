/**
 * Sandbox templates: an image plus the defaults a sandbox of it gets. The built-in ones (`base`,
 * `code`) are Dockerfiles in `packages/server/sandbox-templates/`, built on first use through the
 * same content-addressed path as environment images (an unchanged Dockerfile is never rebuilt).
 */
import path from 'node:path';
import { buildContentHash, contentTag } from '../images/content-tag.js';
import { listContextFiles, packContext } from '../images/context-files.js';
import type { ImageBuilder } from '../images/image-builder.js';
import type { BuildPlan } from '../plan/plan.js';
import type { Store } from '../store/store.js';

export interface SandboxTemplate {
  name: string;
  /** A Dockerfile's folder (built on first use), or an image reference. */
  source: { buildDir: string } | { image: string };
  user: string;
  home: string;
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
}

/** Defaults every built-in template shares. */
const DEFAULTS = {
  // uid:gid, so the private home (a tmpfs) is made theirs; the image names it "user".
  user: '1000:1000',
  home: '/home/user',
  memoryMb: 512,
  cpu: 1,
  pids: 256,
  diskMb: 256,
  readOnlyRoot: true,
  isolation: 'runc',
} as const;

export function builtInTemplates(dir: string): SandboxTemplate[] {
  return ['base', 'code'].map((name) => ({ ...DEFAULTS, name, source: { buildDir: path.join(dir, name) } }));
}

/** Resolves a template to an image present where sandboxes run, building it when needed. */
export class SandboxTemplates {
  private readonly byName: Map<string, SandboxTemplate>;
  /** One build per image at a time, however many sandboxes ask for it. */
  private readonly building = new Map<string, Promise<string>>();

  constructor(
    templates: SandboxTemplate[],
    private readonly images: ImageBuilder,
    private readonly store: Store,
  ) {
    this.byName = new Map(templates.map((t) => [t.name, t]));
  }

  get(name: string): SandboxTemplate | undefined {
    return this.byName.get(name);
  }

  list(): SandboxTemplate[] {
    return [...this.byName.values()];
  }

  /** Its image is there already (nothing to build). */
  async built(template: SandboxTemplate): Promise<boolean> {
    return (await this.builtImage(template)) !== null;
  }

  /** The image its sandboxes run, when it is there; `null` while it still has to be built. */
  async builtImage(template: SandboxTemplate): Promise<string | null> {
    const tag =
      'image' in template.source ? template.source.image : (await this.buildOf(template.source.buildDir)).tag;
    return (await this.images.hasImage(tag)) ? tag : null;
  }

  private async buildOf(context: string) {
    const build: BuildPlan = { context, dockerfile: 'Dockerfile', args: {} };
    const entries = await listContextFiles(build.context, build.dockerfile);
    return { build, entries, tag: contentTag('sandbox', await buildContentHash(build, entries)) };
  }

  async image(template: SandboxTemplate): Promise<string> {
    if ('image' in template.source) return template.source.image;
    const { build, entries, tag } = await this.buildOf(template.source.buildDir);
    let pending = this.building.get(tag);
    if (!pending) {
      pending = (async () => {
        if (!(await this.images.hasImage(tag))) {
          await this.images.build(tag, build, { context: packContext(build.context, entries) });
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
