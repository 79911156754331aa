/**
 * `mayfly serve` as a user runs it: the real bin, the real server, a temporary data dir. Its flags
 * reach the server (limits, allowed host paths), bad flags exit 2 before anything starts, a second
 * server on the same data dir is refused, and SIGTERM stops it cleanly.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitForState } from '../../../server/src/test-support/control-plane-process.js';
import { TESTKIT_IMAGE, testInstanceName } from '../../../server/src/test-support/global-setup.js';
import { run, startServe } from '../test-support/serve-command.js';

describe('mayfly serve', () => {
  let dataDir: string;
  let allowed: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'mayfly-serve-'));
    allowed = await mkdtemp(path.join(os.tmpdir(), 'mayfly-serve-allowed-'));
    await writeFile(path.join(allowed, 'greeting.txt'), 'hello from the host\n');
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
    await rm(allowed, { recursive: true, force: true });
  });

  it('refuses bad flags with exit 2 before starting anything', async () => {
    for (const args of [
      ['--port', '99999'],
      ['--allow-host-path', 'relative/dir'],
      ['--default-pids', '0'],
      ['--default-memory', 'lots'],
      ['--sandbox-pool', 'base'],
      ['--sandbox-pool', 'base=-1'],
      ['--sandbox-pool-memory', 'lots'],
      ['--sandbox-gvisor-runtime', 'run sc;'],
      ['--sandbox-allow-private', '10.0.0.0'],
      ['--sandbox-allow-private', '10.0.0.0/33'],
      ['--max-sandboxes', '0'],
      ['--max-sandboxes', 'many'],
      ['--runtime', 'podman'],
      ['--runtime', 'kubernetes', '--registry', 'a registry'],
      ['--runtime', 'kubernetes', '--kube-gateway-from', '10.0.0.1'],
      ['--runtime', 'kubernetes', '--kube-local-volumes', 'relative/dir'],
      ['--runtime', 'kubernetes', '--kube-storage-class', 'Not_A_Name'],
      ['--runtime', 'kubernetes', '--kube-storage-class', 'fast', '--kube-local-volumes', '/var/v'],
      ['--admin-token-file', 'relative/token'],
      ['--runtime', 'kubernetes', '--kube-runtime-class', 'kata=kata'],
      ['--runtime', 'kubernetes', '--kube-runtime-class', 'gvisor=Not_A_Name'],
      ['--runtime', 'kubernetes', '--kube-runtime-class', 'gvisor'],
      ['--runtime', 'kubernetes', '--sandbox-runtime', 'firecracker'],
      ['--runtime', 'kubernetes', '--sandbox-runtime', 'kubernetes', '--kube-sandbox-blocked', '10.244.0.0'],
    ]) {
      const result = await run(['serve', '--data', dataDir, ...args]);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr, args.join(' ')).toMatch(/^mayfly: invalid --/);
    }
    // Cluster flags without the cluster runtime say what they need.
    const docker = await run(['serve', '--data', dataDir, '--kubeconfig', '/tmp/k']);
    expect(docker.code).toBe(2);
    expect(docker.stderr).toMatch(/--kubeconfig needs --runtime kubernetes/);
    const storage = await run(['serve', '--data', dataDir, '--kube-storage-class', 'fast']);
    expect(storage.code).toBe(2);
    expect(storage.stderr).toMatch(/--kube-storage-class needs --runtime kubernetes/);
    const classes = await run(['serve', '--data', dataDir, '--kube-runtime-class', 'gvisor=gvisor']);
    expect(classes.code).toBe(2);
    expect(classes.stderr).toMatch(/--kube-runtime-class needs --runtime kubernetes/);
    const sandboxes = await run(['serve', '--data', dataDir, '--sandbox-runtime', 'kubernetes']);
    expect(sandboxes.code).toBe(2);
    expect(sandboxes.stderr).toMatch(/--sandbox-runtime kubernetes needs --runtime kubernetes/);
    const blocked = await run(['serve', '--data', dataDir, '--kube-sandbox-blocked', '10.244.0.0/16']);
    expect(blocked.code).toBe(2);
    expect(blocked.stderr).toMatch(/--kube-sandbox-blocked needs --sandbox-runtime kubernetes/);
    const unchecked = await run([
      'serve',
      '--data',
      dataDir,
      '--runtime',
      'kubernetes',
      '--kube-skip-policy-check',
    ]);
    expect(unchecked.code).toBe(2);
    expect(unchecked.stderr).toMatch(/--kube-skip-policy-check needs --sandbox-runtime kubernetes/);
    const unblocked = await run([
      'serve',
      '--data',
      dataDir,
      '--runtime',
      'kubernetes',
      '--sandbox-runtime',
      'kubernetes',
      '--sandbox-allow-private',
      '10.0.0.0/8',
    ]);
    expect(unblocked.code).toBe(2);
    expect(unblocked.stderr).toMatch(
      /--sandbox-allow-private with --sandbox-runtime kubernetes needs --kube-sandbox-blocked/,
    );
  });

  it('runs with its limits and allowed paths, refuses a second server on its data dir, and stops on SIGTERM', async () => {
    const { child, info } = await startServe([
      '--data',
      dataDir,
      '--allow-host-path',
      allowed,
      '--default-memory',
      '256m',
      '--default-pids',
      '64',
      // (No warm sandboxes: this server makes none it would not use.)
      '--sandbox-pool',
      'base=0',
      '--sandbox-pool',
      'code=0',
      '--sandbox-gvisor-runtime',
      'mayfly-missing-runtime',
      '--instance-name',
      testInstanceName(),
    ]);
    try {
      expect(info.adminTokenFile).toBe(path.join(dataDir, 'admin-token'));
      expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
      const token = (await readFile(info.adminTokenFile, 'utf8')).trim();

      const second = await run(['serve', '--port', '0', '--data', dataDir]);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain(`another Mayfly server (pid ${child.pid}) is using ${dataDir}`);

      // Its gVisor runtime is the one named (this Engine has none of that name).
      const gvisor = await fetch(`${info.url}/v1/sandbox-templates`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'gv', image: TESTKIT_IMAGE, isolation: 'gvisor' }),
      });
      expect(gvisor.status).toBe(400);
      expect(await gvisor.text()).toContain('no \\"mayfly-missing-runtime\\" runtime');

      const res = await fetch(`${info.url}/v1/environments`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          name: 'served',
          template: {
            filename: 'compose.yaml',
            content: `services:\n  app:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n    volumes: ["${allowed}:/host:ro"]\n`,
          },
        }),
      });
      expect(res.status).toBe(201);
      const env = await waitForState({ url: info.url, token }, 'served', ['ready', 'failed']);
      expect(env.failure).toBeNull();
      const container = `mayfly-${env.id}-app-1`;
      expect(
        execFileSync(
          'docker',
          ['inspect', '-f', '{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}', container],
          {
            encoding: 'utf8',
          },
        ).trim(),
      ).toBe(`${256 * 1024 ** 2} 64`);
      expect(
        execFileSync('docker', ['exec', container, 'cat', '/host/greeting.txt'], { encoding: 'utf8' }),
      ).toBe('hello from the host\n');
      await fetch(`${info.url}/v1/environments/served`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${token}` },
      });
      await waitForState({ url: info.url, token }, env.id, ['destroyed']);
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
    expect(await readFile(path.join(dataDir, 'server.pid'), 'utf8').catch(() => 'gone')).toBe('gone');
  });
});
