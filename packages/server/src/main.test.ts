/** Start-up of the composition root: one server per SQLite data dir, and the admin token file. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer } from './main.js';

describe('server start-up', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-main-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  const start = () => startServer({ port: 0, dataDir, logLevel: 'silent' });
  const whoAmI = async (url: string, token: string) =>
    (await fetch(`${url}/v1/environments`, { headers: { authorization: `Bearer ${token}` } })).status;

  it('refuses a second server on the same SQLite data dir, and allows one again after close', async () => {
    const first = await start();
    await expect(start()).rejects.toThrow(`another Mayfly server (pid ${process.pid}) is using ${dataDir}`);
    await first.close();
    const again = await start();
    await again.close();
  });

  it('writes an admin token on first start, and a new one when the file is gone', async () => {
    const first = await start();
    expect(first.adminTokenFile).toBe(path.join(dataDir, 'admin-token'));
    const token = (await readFile(first.adminTokenFile!, 'utf8')).trim();
    expect(await whoAmI(first.url, token)).toBe(200);
    expect(await whoAmI(first.url, `${token}x`)).toBe(401);
    await first.close();

    const kept = await start();
    expect(kept.adminTokenCreated).toBe(false);
    expect((await readFile(kept.adminTokenFile!, 'utf8')).trim()).toBe(token);
    await kept.close();

    await rm(path.join(dataDir, 'admin-token'));
    const renewed = await start();
    expect(renewed.adminTokenCreated).toBe(true);
    const fresh = (await readFile(renewed.adminTokenFile!, 'utf8')).trim();
    expect(fresh).not.toBe(token);
    expect(await whoAmI(renewed.url, fresh)).toBe(200);
    await renewed.close();
  });
});
