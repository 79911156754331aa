/**
 * The dashboard's built files (packages/dashboard/dist: `index.html` and hashed `assets/`), read
 * into memory once with a gzip copy of each: a few small files, served from a map by exact name,
 * so no request path ever reaches the file system.
 */
import { lstat, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

export interface DashboardAsset {
  body: Buffer;
  gzip: Buffer;
  type: string;
  /** Named by a hash of its content: cached for good. */
  immutable: boolean;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};
/** Every file at most this big, all of them together at most ten times that. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;

/**
 * `index.html` as `/`, and every regular file of `assets/` as `/assets/<name>`; null when there is
 * no build in `dir` (the server answers `/` with how to make one).
 */
export async function loadDashboardAssets(dir: string): Promise<Map<string, DashboardAsset> | null> {
  const index = path.join(dir, 'index.html');
  if (!(await lstat(index).catch(() => null))?.isFile()) return null;
  const assets = new Map<string, DashboardAsset>();
  let total = 0;
  const add = async (urlPath: string, file: string, immutable: boolean) => {
    const stat = await lstat(file);
    const type = TYPES[path.extname(file)];
    if (!stat.isFile() || !type || stat.size > MAX_FILE_BYTES) return;
    total += stat.size;
    if (total > 10 * MAX_FILE_BYTES) throw new Error(`the dashboard build in ${dir} is too large`);
    const body = await readFile(file);
    assets.set(urlPath, { body, gzip: gzipSync(body, { level: 9 }), type, immutable });
  };
  await add('/', index, false);
  const assetDir = path.join(dir, 'assets');
  for (const name of await readdir(assetDir).catch(() => [] as string[])) {
    if (/^[A-Za-z0-9._-]+$/.test(name)) await add(`/assets/${name}`, path.join(assetDir, name), true);
  }
  return assets;
}
