#!/usr/bin/env node
/**
 * Bundles the CLI into packages/cli/dist/, with the server it runs for `mayfly serve` (and the
 * bundle packing and template reading of `mayfly up`) as chunks that only those commands load, so
 * `mayfly` starts as plain JavaScript instead of compiling TypeScript with tsx on every run.
 * Plain JavaScript on purpose: `npm install` runs it (`prepare`) before anything else is set up.
 *
 *   node scripts/build.mjs              build
 *   node scripts/build.mjs --if-stale   build only when dist is missing or older than a source file
 *   node scripts/build.mjs --metafile   also write dist/meta.json (what each output is made of)
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { isBuiltin } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outdir = path.join(root, 'packages/cli/dist');
/** Written last, and its modification time is when the build started: the staleness stamp. */
const entryOut = path.join(outdir, 'main.js');

/**
 * Pure-JavaScript packages compiled into the bundle although they are not ours: the CLI loads them
 * on every start, and one file loads faster than Node resolving and compiling each of theirs
 * (`import 'zod'` reads 95 ES modules, commander is 5 CommonJS files). Everything else stays an import from
 * node_modules: better-sqlite3 is native, and the server's packages load only for `mayfly serve`.
 */
const BUNDLED_PACKAGES = new Set(['commander', 'zod']);

/**
 * Files a build older than which is stale: every workspace's sources and manifest, this script,
 * and the lock file (the bundled packages' versions).
 */
function sourceFiles() {
  const files = [fileURLToPath(import.meta.url), path.join(root, 'package-lock.json')];
  for (const pkg of readdirSync(path.join(root, 'packages'))) {
    const dir = path.join(root, 'packages', pkg);
    if (existsSync(path.join(dir, 'package.json'))) files.push(path.join(dir, 'package.json'));
    if (!existsSync(path.join(dir, 'src'))) continue;
    for (const e of readdirSync(path.join(dir, 'src'), { withFileTypes: true, recursive: true })) {
      if (e.isFile()) files.push(path.join(e.parentPath, e.name));
    }
  }
  return files;
}

/** Whether packages/cli/dist is missing or older than any of {@link sourceFiles}. */
export function isStale() {
  if (!existsSync(entryOut)) return true;
  const built = statSync(entryOut).mtimeMs;
  return sourceFiles().some((file) => statSync(file, { throwIfNoEntry: false })?.mtimeMs > built);
}

/** `zod` of `zod/mini`, `@scope/x` of `@scope/x/y`. */
const packageName = (spec) => (spec.startsWith('@') ? spec.split('/', 2).join('/') : spec.split('/', 1)[0]);

/** The folder Node loads package `name` from when a file in `dir` imports it, or null. */
function packageDirFrom(dir, name) {
  for (let d = dir; ; d = path.dirname(d)) {
    const candidate = path.join(d, 'node_modules', name);
    if (existsSync(candidate)) return candidate;
    if (path.dirname(d) === d) return null;
  }
}

/**
 * Which imports are compiled in: the workspace packages (`@mayfly/*`: TypeScript, which Node
 * cannot load) and {@link BUNDLED_PACKAGES}. Every other package stays an import that Node
 * resolves at run time, now from dist/. A package a workspace gets from its own node_modules (npm
 * nests it there when versions conflict: the server's nanoid 5 beside vite's nanoid 3 at the
 * root) would then resolve to the other version, so those are compiled in too, from the copy the
 * workspace would have loaded.
 */
const dependencies = {
  name: 'mayfly-dependencies',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => {
      if (isBuiltin(args.path)) return { external: true };
      const name = packageName(args.path);
      if (name.startsWith('@mayfly/') || BUNDLED_PACKAGES.has(name)) return undefined;
      const own = packageDirFrom(args.resolveDir, name);
      if (own !== null && own !== packageDirFrom(outdir, name)) return undefined;
      return { external: true };
    });
  },
};

/**
 * Bundles the CLI into packages/cli/dist and returns esbuild's metafile.
 *
 * Safe while CLIs run from dist (the test suite spawns them, a server may be up): chunk names
 * carry a hash of their content and are never overwritten, main.js is replaced by a rename, and
 * files of earlier builds are removed only after ten minutes, so a process that loaded an older
 * main.js still finds the chunks it imports later.
 */
export async function build() {
  const esbuild = await import('esbuild');
  const startedAt = new Date();
  const result = await esbuild.build({
    // server.js: what `mayfly serve` imports, also usable on its own (`startServer`).
    entryPoints: {
      main: path.join(root, 'packages/cli/src/main.ts'),
      server: path.join(root, 'packages/server/src/main.ts'),
    },
    outdir,
    write: false,
    bundle: true,
    // Every dynamic import() (the server for `serve`, bundle packing and template reading for
    // `up`) becomes a chunk of its own that only the command using it reads.
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // Chunks sit beside main.js, so `new URL('../x', import.meta.url)` means packages/cli/x in
    // any of them, as it does in packages/cli/src (program.ts's package.json, auto-start.ts's bin).
    chunkNames: '[name]-[hash]',
    // Mapped stack traces: bin/mayfly.js enables source maps for `serve` and MAYFLY_DEBUG=1.
    sourcemap: 'linked',
    sourcesContent: false,
    // Smaller files parse faster; names are kept, so stack traces read without the map too.
    minifyWhitespace: true,
    minifySyntax: true,
    keepNames: true,
    // commander is CommonJS: its require('node:events') and the like need a real `require`.
    banner: {
      js: "import { createRequire as __mayflyCreateRequire } from 'node:module'; const require = __mayflyCreateRequire(import.meta.url);",
    },
    metafile: true,
    logLevel: 'warning',
    plugins: [dependencies],
  });

  mkdirSync(outdir, { recursive: true });
  const written = new Set();
  let entry = null;
  for (const file of result.outputFiles) {
    written.add(file.path);
    if (file.path === entryOut) {
      entry = file;
      continue;
    }
    // A chunk's name is a hash of its content: an existing one already holds these bytes.
    if (/-[A-Z0-9]{8}\.js$/.test(file.path) && existsSync(file.path)) continue;
    writeAtomically(file.path, file.contents);
  }
  writeAtomically(entryOut, entry.contents);
  // A source saved while esbuild read the others is newer than this, so the next check rebuilds.
  utimesSync(entryOut, startedAt, startedAt);

  const tenMinutesAgo = Date.now() - 10 * 60_000;
  for (const name of readdirSync(outdir)) {
    const file = path.join(outdir, name);
    if (!written.has(file) && statSync(file).mtimeMs < tenMinutesAgo) rmSync(file, { force: true });
  }
  return result.metafile;
}

function writeAtomically(file, contents) {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, contents);
  renameSync(tmp, file);
}

const dashboardDir = path.join(root, 'packages/dashboard');
const dashboardOut = path.join(dashboardDir, 'dist/index.html');

/** Whether the dashboard's build is missing or older than any of its sources. */
export function isDashboardStale() {
  if (!existsSync(dashboardOut)) return true;
  const built = statSync(dashboardOut).mtimeMs;
  const files = [path.join(dashboardDir, 'index.html'), path.join(dashboardDir, 'vite.config.ts')];
  for (const e of readdirSync(path.join(dashboardDir, 'src'), { withFileTypes: true, recursive: true })) {
    if (e.isFile()) files.push(path.join(e.parentPath, e.name));
  }
  return files.some((file) => statSync(file, { throwIfNoEntry: false })?.mtimeMs > built);
}

/** Builds the dashboard (packages/dashboard/dist, which the server serves at `/`) with Vite. */
export async function buildDashboard() {
  const { build: viteBuild } = await import('vite');
  await viteBuild({ configFile: path.join(dashboardDir, 'vite.config.ts'), logLevel: 'warn' });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const ifStale = process.argv.includes('--if-stale');
  if (!ifStale || isDashboardStale()) {
    const started = performance.now();
    await buildDashboard();
    console.error(`[mayfly] built packages/dashboard/dist in ${Math.round(performance.now() - started)} ms`);
  }
  if (ifStale && !isStale()) process.exit(0);
  const started = performance.now();
  const metafile = await build();
  if (process.argv.includes('--metafile')) {
    writeFileSync(path.join(outdir, 'meta.json'), JSON.stringify(metafile));
  }
  const files = Object.keys(metafile.outputs).filter((f) => f.endsWith('.js')).length;
  const ms = Math.round(performance.now() - started);
  console.error(`[mayfly] built packages/cli/dist (${files} files) in ${ms} ms`);
}
