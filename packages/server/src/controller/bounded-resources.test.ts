/**
 * Bounded resources: every container has memory and pids limits (a fork or memory bomb stays in
 * its box), logs are served with a default tail and streamed with backpressure, the gateway's
 * route cache is bounded and forgets destroyed environments, and the store and the image disk do
 * not grow without end.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Environment } from '@mayfly/contract';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ControlPlane,
  callApi,
  destroyAll,
  startControlPlane,
  stopControlPlane,
  waitForState,
} from '../test-support/control-plane-process.js';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { nonceBuildProject } from '../test-support/projects.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { composeTemplate, until } from '../test-support/until.js';

const inspect = (container: string, format: string) =>
  execFileSync('docker', ['inspect', '-f', format, container], { encoding: 'utf8' }).trim();
const containerOf = (envId: string, workload: string) => `mayfly-${envId}-${workload}-1`;
const compose = composeTemplate;

describe('bounded resources', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({
      gcIntervalMs: 500,
      gatewayCacheMs: 60_000,
      gatewayCacheEntries: 50,
      destroyedRetentionMs: 1,
      imageBudgetBytes: 1,
      imageGcGraceMs: 5_000,
    });
  });
  afterAll(async () => {
    await t.close();
  });

  it('gives every container memory and pids limits unless the template sets its own', async () => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'limits',
      template: compose(`  plain:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
  own:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
    mem_limit: 128m
    pids_limit: 50
`),
    });
    const env = await t.waitForState(res.body.id, ['ready', 'failed']);
    expect(env.failure).toBeNull();
    expect(inspect(containerOf(env.id, 'plain'), '{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}')).toBe(
      `${1024 ** 3} 1024`,
    );
    expect(inspect(containerOf(env.id, 'own'), '{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}')).toBe(
      `${128 * 1024 ** 2} 50`,
    );
    await t.api('DELETE', '/v1/environments/limits');
    await t.waitForState(env.id, ['destroyed']);
  });

  it('keeps a fork bomb inside its pids limit and a memory bomb inside its memory limit', async () => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'bombs',
      template: compose(`  memory:
    image: ${TESTKIT_IMAGE}
    command: ["python3", "-c", "x = bytearray(300 * 1024 * 1024); print('allocated')"]
    mem_limit: 64m
    x-mayfly: { job: true }
`),
    });
    const env = await t.waitForState(res.body.id, ['ready', 'failed']);
    expect(env.state).toBe('failed');
    expect(env.failure?.step).toBe('job:memory');
    expect(env.failure?.reason).toMatch(/exited with code 137/);
    const deadline = Date.now() + 10_000;
    while (labelledCount(env.id) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await t.api('DELETE', '/v1/environments/bombs');
    await t.waitForState(env.id, ['destroyed']);

    const forks = await t.api<Environment>('POST', '/v1/environments', {
      name: 'forks',
      // Forks until the kernel says no (EAGAIN at the pids limit), then carries on.
      template: compose(`  forks:
    image: ${TESTKIT_IMAGE}
    command:
      - python3
      - -c
      - |
        import os, time
        for _ in range(500):
            try:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
            except OSError:
                pass
        print("forked as far as allowed", flush=True)
        time.sleep(3600)
    pids_limit: 32
`),
    });
    const running = await t.waitForState(forks.body.id, ['ready', 'failed']);
    expect(running.state).toBe('ready');
    await until('the forks to hit the limit', async () => {
      const logs = await t.api<string>('GET', '/v1/environments/forks/logs?service=forks');
      return String(logs.body).includes('forked as far as allowed') ? true : undefined;
    });
    // Counted from the host (an exec would need a free pid in the container, and there is none).
    const pids =
      execFileSync('docker', ['top', containerOf(running.id, 'forks')], { encoding: 'utf8' })
        .trim()
        .split('\n').length - 1;
    expect(pids).toBeGreaterThan(25);
    expect(pids).toBeLessThanOrEqual(32);
    await t.api('DELETE', '/v1/environments/forks');
    await t.waitForState(running.id, ['destroyed']);
  });

  it('serves the last 1000 log lines by default, all with tail=all, none with tail=0', async () => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'chatty',
      template: compose(`  talk:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "log", "1500"]
`),
    });
    const env = await t.waitForState(res.body.id, ['ready', 'failed']);
    // All 1500 lines written first; then each tail is asked for once.
    await until('1500 lines', async () => {
      const all = await t.api<string>('GET', '/v1/environments/chatty/logs?service=talk&tail=all');
      return String(all.body).includes('line 1500') ? true : undefined;
    });
    const lines = async (query: string) => {
      const text = String(
        (await t.api<string>('GET', `/v1/environments/chatty/logs?service=talk&${query}`)).body,
      );
      return text === '' || text === 'null' ? [] : text.trimEnd().split('\n');
    };
    const byDefault = await lines('');
    expect(byDefault).toHaveLength(1000);
    expect(byDefault[0]).toBe('line 501');
    expect(await lines('tail=all')).toHaveLength(1500);
    expect(await lines('tail=0')).toHaveLength(0);
    expect(await lines('tail=3')).toEqual(['line 1498', 'line 1499', 'line 1500']);
    await t.api('DELETE', '/v1/environments/chatty');
    await t.waitForState(env.id, ['destroyed']);
  });

  it('forgets a destroyed environment at once, keys hosts by their normal form, and stays bounded', async () => {
    const web = compose(`  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "http", "--port", "8080", "--text", "first"]
    ports: ["8080"]
`);
    const first = await t.api<Environment>('POST', '/v1/environments', { name: 'gw', template: web });
    await t.waitForState(first.body.id, ['ready']);
    expect((await t.viaGateway('web--gw.localhost')).text).toBe('first');
    expect((await t.viaGateway('WEB--GW.LocalHost.:80')).text).toBe('first');
    const entries = t.server.gateway.cachedHosts;
    await t.api('DELETE', '/v1/environments/gw');
    await t.waitForState(first.body.id, ['destroyed']);
    // The route was cached for a minute; a destroyed environment must not keep answering (or 502).
    expect((await t.viaGateway('web--gw.localhost')).status).toBe(404);

    for (let i = 0; i < 200; i++) await t.viaGateway(`web--nosuch${i}.localhost`);
    expect(t.server.gateway.cachedHosts).toBeLessThanOrEqual(50);
    expect(entries).toBeLessThanOrEqual(2);
  });

  it('deletes destroyed environments after the retention time', async () => {
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'retained',
      template: compose(`  app:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n`),
    });
    await t.waitForState(res.body.id, ['ready']);
    await t.api('DELETE', '/v1/environments/retained');
    await t.waitForState(res.body.id, ['destroyed']);
    await until('the record to go', async () =>
      (await t.api('GET', `/v1/environments/${res.body.id}`)).status === 404 ? true : undefined,
    );
  });

  it('removes built images past the disk budget once no environment uses them', async () => {
    const dir = await nonceBuildProject();
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'imggc',
      template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
    });
    const env = await t.waitForState(res.body.id, ['ready', 'failed']);
    expect(env.failure).toBeNull();
    const image = inspect(containerOf(env.id, 'app'), '{{.Config.Image}}');
    // Over budget (1 byte) but in use: several collections later it is still there.
    const gcRuns = (await t.events(env.id)).length;
    await new Promise((r) => setTimeout(r, 1_500)); // three GC intervals: nothing to await but time itself
    expect(gcRuns).toBeGreaterThan(0);
    expect(imageExists(image)).toBe(true);
    await t.api('DELETE', '/v1/environments/imggc');
    await t.waitForState(env.id, ['destroyed']);
    await until('the image to be collected', async () => (imageExists(image) ? undefined : true));
    await rm(dir, { recursive: true, force: true });
  });
});

describe('log streaming with backpressure', () => {
  let dataDir: string;
  let plane: ControlPlane;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-logs-'));
    // Docker keeps this much of a container's output (the default, 30 MiB, would drop most of it;
    // json-file stores each 100-byte line as about 150 bytes of JSON).
    plane = await startControlPlane(dataDir, undefined, { containerLogMaxBytes: 1536 * 1024 ** 2 });
  });
  afterAll(async () => {
    await destroyAll(plane);
    await stopControlPlane(plane);
    await rm(dataDir, { recursive: true, force: true });
  });

  it('a client reading 200 MB of logs slowly keeps the server RSS flat', async () => {
    const env = await callApi<Environment>(plane, 'POST', '/v1/environments', {
      name: 'flood',
      template: compose(`  flood:
    image: ${TESTKIT_IMAGE}
    command: ["python3", "-c", "import sys, time\\nline = 'x' * 99 + '\\\\n'\\nfor _ in range(2_000_000): sys.stdout.write(line)\\nsys.stdout.flush()\\ntime.sleep(3600)"]
`),
    });
    await waitForState(plane, 'flood', ['ready']);
    const rss = () =>
      Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${plane.child.pid}/status`, 'utf8'))![1]) * 1024;
    const before = rss();
    const res = await fetch(`${plane.url}/v1/environments/flood/logs?service=flood&tail=all&follow=1`, {
      headers: { authorization: `Bearer ${plane.token}` },
    });
    const reader = res.body!.getReader();
    let bytes = 0;
    let peak = before;
    // Slowly: a read, then a pause in which the server must not buffer what the client has not taken.
    for (let i = 0; i < 60; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.length;
      await new Promise((r) => setTimeout(r, 50));
      peak = Math.max(peak, rss());
    }
    // Then fast, to the end of what the container wrote (2 000 000 lines of 100 bytes).
    while (bytes < 200_000_000) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.length;
      if (bytes % (16 * 1024 * 1024) < value.length) peak = Math.max(peak, rss());
    }
    await reader.cancel();
    expect(bytes).toBeGreaterThanOrEqual(200_000_000);
    expect((peak - before) / 1024 ** 2).toBeLessThan(96);
    await callApi(plane, 'DELETE', `/v1/environments/${env.id}`);
    await waitForState(plane, env.id, ['destroyed']);
  });
});

function imageExists(ref: string): boolean {
  try {
    execFileSync('docker', ['image', 'inspect', ref], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function labelledCount(envId: string): number {
  return execFileSync('docker', ['ps', '-aq', '--filter', `label=mayfly.env=${envId}`], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean).length;
}
