/**
 * `mayfly up`'s upload: the template's folder packed as a gzip'd tar (honouring its
 * `.dockerignore`) and sent to the server as a bundle, so that build contexts, env files and bind
 * sources reach a remote server, and the server decides what the template may touch.
 */
import { lstatSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join, parse, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import type { Bundle, MayflyClient } from '@mayfly/sdk';
import { UsageError } from './cli-error.js';
import { formatBytes, formatElapsed } from './format.js';
import { printStderr } from './output.js';
import { type TemplateFile, templateSource } from './template-inputs.js';

/**
 * Largest uncompressed bundle the CLI packs: the server's default limit. A server configured
 * lower refuses a bundle above its own limit with a message saying so.
 */
export const BUNDLE_MAX_BYTES = 256 * 1024 * 1024;

/** How often a long upload reports the bytes sent so far. */
const PROGRESS_EVERY_MS = 2000;

/** What {@link packTemplateFolder} needs. */
export interface PackRequest {
  /** Absolute path of the template file. */
  file: string;
  /** Its content, already read. */
  content: string;
  /** Compose override files (`-f` after the first), also sent; they must be inside `root` too. */
  overrides?: readonly TemplateFile[];
  /** Absolute path of the folder to send; it must hold `file` and the override files. */
  root: string;
  /** Template inputs: an interpolated env file name must resolve as it will on the server. */
  inputs: Record<string, string>;
  /** Active Compose profiles: the files of an inactive service are not needed. */
  profiles?: readonly string[];
}

/** A folder being packed, ready for upload. */
export interface PackedFolder {
  /** The folder sent. */
  root: string;
  /** The template's path inside the folder, with `/` separators: `template.filename` of the create. */
  filename: string;
  /** The override files' paths inside the folder, likewise: `template.overrides` of the create. */
  overrides: string[];
  /** Paths sent even though `.dockerignore` lists them (the template and what it names). */
  forced: string[];
  /** The gzip'd tar, produced as it is read. */
  stream: Readable;
}

/** A host path a template names, as `loadTemplate`'s `onHostPath` reports it. */
interface HostPathRef {
  /** `template`: a Compose file named by `extends: { file }`, which the server reads too. */
  kind: 'build-context' | 'dockerfile' | 'env-file' | 'bind' | 'template';
  path: string;
}

/**
 * Packs `root` for upload. The template file is always sent, and so are the env files, bind
 * sources, Dockerfiles and Compose files (`extends`) it names inside `root` (Docker too sends a
 * Dockerfile that its `.dockerignore` lists); every other file `.dockerignore` lists stays here.
 * @throws UsageError when the template is not inside `root`, or the folder cannot be sent as it is
 *   (a link pointing outside, a socket, too large…).
 */
export async function packTemplateFolder(request: PackRequest): Promise<PackedFolder> {
  const root = sendableFolder(request.root, '--root');
  const inside = (file: string, what: string) => {
    const name = relative(root, file);
    if (name === '' || name.startsWith(`..${sep}`) || name === '..' || isAbsolute(name)) {
      throw new UsageError(
        `the ${what} ${file} is not inside ${root}`,
        '--root must be a folder that holds the template and its override files',
      );
    }
    return name.split(sep).join('/');
  };
  const filename = inside(request.file, 'template');
  const overrides = (request.overrides ?? []).map((o) => inside(o.file, 'override file'));

  const refs = await hostPathsOf(request, root);
  const templateDir = dirname(request.file);
  const forced = new Set<string>([request.file, ...(request.overrides ?? []).map((o) => o.file)]);
  const outside: HostPathRef[] = [];
  for (const ref of refs) {
    const absolute = resolve(templateDir, ref.path);
    if (!isInsideLexically(root, absolute)) {
      outside.push({ kind: ref.kind, path: absolute });
      continue;
    }
    // What does not exist is the server's to report (with the template's line and column).
    if (!exists(absolute)) continue;
    if (ref.kind !== 'build-context') forced.add(absolute);
    // The builder must see a context's own .dockerignore, whatever the folder's says.
    if (ref.kind === 'build-context' && exists(join(absolute, '.dockerignore'))) {
      forced.add(join(absolute, '.dockerignore'));
    }
  }
  for (const ref of outside) {
    // Only a path the server's operator allows (`serve --allow-host-path`) works from outside.
    printStderr(
      `mayfly: note: ${ref.kind} ${displayPath(ref.path)} is outside ${displayPath(root)} and is not sent; pass --root with a folder that holds both`,
    );
  }

  const stream = await packFolder(root, [...forced]);
  return { root, filename, overrides, forced: [...forced], stream };
}

/** `folder`, absolute, when it is a folder that may be sent whole; `flag` names it in the error. */
export function sendableFolder(folder: string, flag: string): string {
  const root = resolve(folder);
  let rootIsFolder = false;
  try {
    rootIsFolder = statSync(root).isDirectory();
  } catch {
    // reported below
  }
  if (!rootIsFolder) throw new UsageError(`${flag} ${folder} is not a folder`);
  // Walking these would take long and send what no template needs (and much that is private).
  if (root === parse(root).root || root === resolve(homedir())) {
    throw new UsageError(
      `refusing to upload all of ${root}`,
      'move the template into a folder of its own, or pass --root with the folder that holds what it needs',
    );
  }
  return root;
}

/** Packs a folder (what its `.dockerignore` lists stays here, unless forced) as a gzip'd tar stream. */
export async function packFolder(root: string, forceInclude: string[] = []): Promise<Readable> {
  const { packBundle, BundlePackError } = await import('@mayfly/server/bundle');
  try {
    return await packBundle(root, { forceInclude, maxBytes: BUNDLE_MAX_BYTES });
  } catch (err) {
    if (err instanceof BundlePackError) throw new UsageError(`cannot send ${root}: ${err.message}`);
    throw err;
  }
}

/**
 * Every host path the template names, read with the server's own loader. Template errors are
 * ignored here: the server reports them, with positions, once it has the bundle.
 */
async function hostPathsOf(request: PackRequest, root: string): Promise<HostPathRef[]> {
  const { loadTemplate, TemplateError } = await import('@mayfly/server/template');
  const refs: HostPathRef[] = [];
  try {
    loadTemplate(templateSource(request, request.overrides), {
      inputs: request.inputs,
      root,
      profiles: request.profiles ?? [],
      onHostPath: (ref: HostPathRef) => refs.push(ref),
    });
  } catch (err) {
    if (!(err instanceof TemplateError)) throw err;
  }
  return refs;
}

/**
 * Uploads a packed folder, with progress on stderr: a line when it starts, the bytes sent every
 * few seconds while it runs long, and what the server received when it is done.
 */
export async function uploadBundle(
  client: MayflyClient,
  packed: Pick<PackedFolder, 'root' | 'stream'>,
): Promise<Bundle> {
  const start = Date.now();
  const name = basename(packed.root);
  printStderr(`uploading ${name}`);
  let sent = 0;
  const timer = setInterval(() => {
    printStderr(`  ${formatElapsed(Date.now() - start).padStart(6)}  ${formatBytes(sent)} sent`);
  }, PROGRESS_EVERY_MS);
  timer.unref();
  async function* counted(): AsyncGenerator<Uint8Array, void, undefined> {
    for await (const chunk of packed.stream as AsyncIterable<Uint8Array>) {
      sent += chunk.byteLength;
      yield chunk;
    }
  }
  try {
    const bundle = await client.bundles.upload(counted(), { gzip: true });
    printStderr(
      `uploaded ${name} (${bundle.files} ${bundle.files === 1 ? 'file' : 'files'}, ${formatBytes(bundle.bytes)}) in ${formatElapsed(Date.now() - start)}`,
    );
    return bundle;
  } finally {
    clearInterval(timer);
  }
}

/** Relative to the current directory when that is shorter, as the user typed it most likely. */
function displayPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel !== '' && rel.length < path.length ? rel : path;
}

function isInsideLexically(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
