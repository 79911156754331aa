/**
 * Start-up and shutdown of the composition root: one server per SQLite data dir (a kernel lock,
 * not fooled by pids), the admin token file, and a SIGTERM that ends the process within seconds
 * even with log streams and WebSockets open.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startServer } from './main.js';
import { callApi, startControlPlane, waitForState } from './test-support/control-plane-process.js';
import { TESTKIT_IMAGE, testInstanceName } from './test-support/global-setup.js';

describe('server start-up', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-main-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  const start = () => startServer({ port: 0, dataDir, logLevel: 'silent', instanceName: testInstanceName() });
  const whoAmI = async (url: string, token: string) =>
    (await fetch(`${url}/v1/environments`, { headers: { authorization: `Bearer ${token}` } })).status;

  it('refuses a second server on the same SQLite data dir, and allows one again after close', async () => {
    const first = await start();
    await expect(start()).rejects.toThrow(`another Mayfly server (pid ${process.pid}) is using ${dataDir}`);
    await first.close();
    const again = await start();
    await again.close();
  });

  it('is not fooled by a stale pid file holding its own pid, or a live process that got a recycled pid', async () => {
    // A container restart gives the new server the old one's pid: the pid file then names "itself".
    await writeFile(path.join(dataDir, 'server.pid'), `${process.pid}\n`);
    const own = await start();
    await own.close();
    const other = spawn('sleep', ['60']);
    try {
      await writeFile(path.join(dataDir, 'server.pid'), `${other.pid}\n`);
      const recycled = await start();
      expect((await readFile(path.join(dataDir, 'server.pid'), 'utf8')).trim()).toBe(String(process.pid));
      await recycled.close();
    } finally {
      other.kill();
    }
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

  it("adopts the operator's admin token from a file instead of making one; refuses a file that holds no token", async () => {
    const file = path.join(dataDir, 'operator-token');
    const token = `mfy_${randomBytes(32).toString('base64url')}`;
    await writeFile(file, `${token}\n`, { mode: 0o400 });
    const first = await startServer({
      port: 0,
      dataDir,
      logLevel: 'silent',
      instanceName: testInstanceName(),
      adminTokenFile: file,
    });
    expect(first).toMatchObject({ adminTokenFile: file, adminTokenCreated: true });
    expect(await whoAmI(first.url, token)).toBe(200);
    // A second start (another replica) finds it stored; the file is only read.
    await first.close();
    const again = await startServer({ port: 0, dataDir, logLevel: 'silent', adminTokenFile: file });
    expect(again.adminTokenCreated).toBe(false);
    expect(await whoAmI(again.url, token)).toBe(200);
    expect((await readFile(file, 'utf8')).trim()).toBe(token);
    // Revoked, it stays revoked: the next start refuses it rather than run without an admin.
    const [operator] = (await again.store.tokens.list()).filter((t) => t.name === 'admin (operator)');
    await again.store.tokens.revoke(operator!.id);
    await again.close();
    await expect(startServer({ port: 0, dataDir, logLevel: 'silent', adminTokenFile: file })).rejects.toThrow(
      `the admin token in ${file} was revoked`,
    );

    for (const bad of ['', 'hunter2', `${token}x`, `mfy_${'a'.repeat(42)}!`]) {
      await writeFile(file, bad);
      await expect(
        startServer({ port: 0, dataDir, logLevel: 'silent', adminTokenFile: file }),
      ).rejects.toThrow(`${file} does not hold a Mayfly token`);
    }
  });
});

describe('shutdown', () => {
  it('SIGTERM with a followed log stream and a WebSocket open ends the process within seconds', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-sigterm-'));
    let plane = await startControlPlane(dataDir);
    const env = await callApi<Environment>(plane, 'POST', '/v1/environments', {
      name: 'open',
      template: {
        filename: 'compose.yaml',
        content: `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "http", "--port", "8080"]\n    ports: ["8080"]\n`,
      },
    });
    await waitForState(plane, 'open', ['ready']);
    const logs = await fetch(`${plane.url}/v1/environments/open/logs?follow=1`, {
      headers: { authorization: `Bearer ${plane.token}` },
    });
    const reader = logs.body!.getReader();
    await reader.read(); // the stream is open and flowing
    const ws = new WebSocket(`${plane.url.replace('http', 'ws')}/ws`, {
      headers: { host: 'web--open.localhost' },
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => ws.send('hello'));
      ws.once('message', () => resolve());
      ws.once('error', reject);
    });
    const exited = new Promise<number>((resolve) =>
      plane.child.once('exit', () => resolve(performance.now())),
    );
    const sent = performance.now();
    plane.child.kill('SIGTERM');
    const tookMs = (await exited) - sent;
    expect(tookMs).toBeLessThan(5_000);
    ws.terminate();
    await reader.cancel().catch(() => {});
    // Clean up with a new process on the same data dir.
    plane = await startControlPlane(dataDir);
    await callApi(plane, 'DELETE', `/v1/environments/${env.id}`);
    await waitForState(plane, env.id, ['destroyed']);
    plane.child.kill('SIGTERM');
    await new Promise((r) => plane.child.once('exit', r));
    await rm(dataDir, { recursive: true, force: true });
  });
});
