/**
 * The Compose keys Mayfly honours beyond images, commands, ports and volumes really do on the
 * Docker Engine what `docker compose` makes them do: one environment (testdata/compose-keys,
 * uploaded as a bundle so `file:` sources work) is created through the real server, then looked
 * into the way a user would — `docker exec` in its containers and `docker inspect`. Small
 * environments beside it check profiles, and that hostile keys are refused before anything exists.
 */
// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Compose references are the subject
import { spawnSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Environment } from '@mayfly/contract';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../test-support/global-setup.js';
import { makeProject } from '../test-support/projects.js';
import { startTestServer, type TestServer } from '../test-support/test-server.js';
import { composeTemplate, until } from '../test-support/until.js';

type ErrorReply = { error: { code: string; message: string; issues?: { path: string; message: string }[] } };

const FIXTURE = fileURLToPath(new URL('./testdata/compose-keys', import.meta.url));
const docker = new Docker();
const containerOf = (envId: string, workload: string, replica = 1) =>
  `mayfly-${envId}-${workload}-${replica}`;
const inspect = (container: string) => docker.getContainer(container).inspect();

/** Runs `script` with sh inside `container` (as `user` when given): exit code and output. */
function run(container: string, script: string, user?: string): { code: number; out: string; err: string } {
  const res = spawnSync('docker', ['exec', ...(user ? ['-u', user] : []), container, 'sh', '-c', script], {
    encoding: 'utf8',
  });
  return { code: res.status ?? -1, out: res.stdout, err: res.stderr };
}
/** Like {@link run}, but the script must succeed; its output. */
function sh(container: string, script: string, user?: string): string {
  const res = run(container, script, user);
  if (res.code !== 0) throw new Error(`${container}: \`${script}\` exited ${res.code}: ${res.err}`);
  return res.out;
}

/** The line of /proc/mounts for `target` in `container`, split into fields. */
const mountOf = (container: string, target: string) =>
  sh(container, 'cat /proc/mounts')
    .split('\n')
    .map((line) => line.split(' '))
    .find((fields) => fields[1] === target);

/** Labelled containers, networks and volumes of this test run (as the leak check counts them). */
async function labelledObjects(): Promise<string[]> {
  const run = process.env.MAYFLY_TEST_RUN ?? '';
  const ours = (labels: Record<string, string> | undefined) =>
    run !== '' && (labels?.['mayfly.instance'] ?? '').startsWith(run);
  const filters = { label: ['mayfly.managed-by=mayfly'] };
  const [containers, networks, volumes] = await Promise.all([
    docker.listContainers({ all: true, filters }),
    docker.listNetworks({ filters }),
    docker.listVolumes({ filters }),
  ]);
  return [
    ...containers.filter((c) => ours(c.Labels)).map((c) => `container ${c.Names[0]}`),
    ...networks.filter((n) => ours(n.Labels)).map((n) => `network ${n.Name}`),
    ...(volumes.Volumes ?? []).filter((v) => ours(v.Labels)).map((v) => `volume ${v.Name}`),
  ].sort();
}

/** The running containers of one service of an environment, by name. */
async function containersOf(envId: string, workload: string): Promise<string[]> {
  const list = await docker.listContainers({
    all: true,
    filters: { label: [`mayfly.env=${envId}`, `mayfly.service=${workload}`] },
  });
  return list.map((c) => c.Names[0]!.replace(/^\//, '')).sort();
}

describe('Compose keys on the Docker Engine', () => {
  let t: TestServer;
  let env: Environment;
  let builtImage: string | undefined;
  beforeAll(async () => {
    t = await startTestServer();
    const res = await t.api<Environment>('POST', '/v1/environments', {
      name: 'keys',
      template: { filename: 'compose.yaml', bundle: await t.upload(FIXTURE) },
      inputs: { API_KEY: 'k-123', WORKERS: '4' },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    env = await t.waitForState('keys', ['ready', 'failed']);
    expect(env.failure, JSON.stringify(env.failure)).toBeNull();
    builtImage = (await inspect(containerOf(env.id, 'nohealth'))).Config.Image;
  });
  afterAll(async () => {
    await t?.close();
    // The image built from testdata/compose-keys/unhealthy: no later run may find it cached.
    if (builtImage) spawnSync('docker', ['rmi', builtImage]);
  });

  describe('the main environment', () => {
    it('labels: the template’s own beside Mayfly’s', async () => {
      const api = await inspect(containerOf(env.id, 'api'));
      expect(api.Config.Labels).toMatchObject({
        'com.example.team': 'shop',
        tier: 'front',
        'mayfly.env': env.id,
        'mayfly.service': 'api',
        'mayfly.managed-by': 'mayfly',
      });
      const hardened = await inspect(containerOf(env.id, 'hardened'));
      expect(hardened.Config.Labels).toMatchObject({ role: 'hardened', 'mayfly.service': 'hardened' });
    });

    it('container_name: others reach the service by it; hostname: what the container calls itself', async () => {
      const name = containerOf(env.id, 'api');
      const api = await inspect(name);
      expect(api.Config.Hostname).toBe('api-host');
      expect(sh(name, 'hostname')).toBe('api-host\n');
      const aliases = api.NetworkSettings.Networks[`mayfly-${env.id}`]?.Aliases ?? [];
      expect(aliases).toEqual(expect.arrayContaining(['api', 'shop-api']));
      // From another service, over the environment's network, by the container_name.
      const worker = containerOf(env.id, 'worker');
      expect(sh(worker, 'wget -q -O - http://shop-api:8080/')).toBe('api here');
      const ip = api.NetworkSettings.Networks[`mayfly-${env.id}`]?.IPAddress;
      expect(sh(worker, `python3 -c "import socket; print(socket.gethostbyname('shop-api'))"`).trim()).toBe(
        ip,
      );
    });

    it('extra_hosts: written into /etc/hosts, IPv4 and IPv6', async () => {
      const name = containerOf(env.id, 'api');
      expect((await inspect(name)).HostConfig.ExtraHosts).toEqual([
        'db.internal:10.1.2.3',
        'v6.internal:::1',
      ]);
      const hosts = sh(name, 'cat /etc/hosts');
      expect(hosts).toMatch(/^10\.1\.2\.3\s+db\.internal$/m);
      expect(hosts).toMatch(/^::1\s+v6\.internal$/m);
    });

    it('init: false runs the command as PID 1; by default an init is PID 1', async () => {
      const api = containerOf(env.id, 'api');
      expect((await inspect(api)).HostConfig.Init).toBe(false);
      expect(sh(api, 'tr "\\0" " " < /proc/1/cmdline')).toMatch(/testkit http/);
      const worker = containerOf(env.id, 'worker');
      expect((await inspect(worker)).HostConfig.Init).toBe(true);
      expect(sh(worker, 'tr "\\0" " " < /proc/1/cmdline')).toMatch(/^\S*docker-init /);
    });

    it('stop_signal and stop_grace_period', async () => {
      // Fields of the Engine's container config that dockerode's types leave out.
      type StopConfig = { StopSignal?: string; StopTimeout?: number };
      const api = (await inspect(containerOf(env.id, 'api'))).Config as StopConfig;
      expect(api).toMatchObject({ StopSignal: 'SIGINT', StopTimeout: 7 });
      // Neither key set: Docker's defaults (SIGTERM, 10 s), nothing written.
      const worker = (await inspect(containerOf(env.id, 'worker'))).Config as StopConfig;
      expect([worker.StopSignal, worker.StopTimeout]).toEqual([undefined, undefined]);
    });

    it('read_only: the root filesystem refuses writes, the tmpfs mounts take them', async () => {
      const name = containerOf(env.id, 'hardened');
      expect((await inspect(name)).HostConfig.ReadonlyRootfs).toBe(true);
      const write = run(name, 'echo x > /written');
      expect(write.code).not.toBe(0);
      expect(write.err).toContain('Read-only file system');
      for (const dir of ['/scratch', '/cache', '/big']) {
        expect(sh(name, `echo in-${dir} > ${dir}/f && cat ${dir}/f`), dir).toBe(`in-${dir}\n`);
      }
    });

    it('tmpfs: short syntax, short with a size, long syntax with a size', async () => {
      const name = containerOf(env.id, 'hardened');
      const declared = ((await inspect(name)).HostConfig.Mounts ?? []).filter((m) => m.Type === 'tmpfs');
      expect(declared.map((m) => m.Target).sort()).toEqual(['/big', '/cache', '/scratch']);
      expect(mountOf(name, '/scratch')?.[2]).toBe('tmpfs');
      expect(mountOf(name, '/cache')?.[3]).toContain('size=8192k');
      expect(mountOf(name, '/big')?.[3]).toContain('size=2048k');
    });

    it('cap_drop: ALL leaves no capability; NET_RAW just that one', async () => {
      const hardened = containerOf(env.id, 'hardened');
      expect((await inspect(hardened)).HostConfig.CapDrop).toEqual(['ALL']);
      const caps = (name: string) =>
        Object.fromEntries(
          sh(name, 'grep ^Cap /proc/self/status')
            .trim()
            .split('\n')
            .map((line) => line.split(/:\s+/))
            .map(([key, hex]) => [key, BigInt(`0x${hex}`)]),
        );
      expect(caps(hardened)).toMatchObject({ CapEff: 0n, CapBnd: 0n, CapPrm: 0n });
      const worker = containerOf(env.id, 'worker');
      expect((await inspect(worker)).HostConfig.CapDrop).toEqual(['NET_RAW']);
      const NET_RAW = 1n << 13n;
      const workerCaps = caps(worker);
      expect(workerCaps.CapBnd & NET_RAW).toBe(0n);
      // but it keeps the rest of Docker's default set, CHOWN (bit 0) among them
      expect(workerCaps.CapBnd & 1n).toBe(1n);
    });

    it('shm_size: the size of /dev/shm', async () => {
      const name = containerOf(env.id, 'hardened');
      expect((await inspect(name)).HostConfig.ShmSize).toBe(64 * 1024 ** 2);
      expect(mountOf(name, '/dev/shm')?.[3]).toContain('size=65536k');
    });

    it('ulimits: nofile soft and hard', async () => {
      const name = containerOf(env.id, 'hardened');
      expect((await inspect(name)).HostConfig.Ulimits).toEqual([{ Name: 'nofile', Soft: 1024, Hard: 2048 }]);
      // The container's own processes: the init and the command it started. (What `docker exec`
      // starts is not one of them: this engine gives it a soft limit equal to the hard one.)
      const limits = sh(
        name,
        'for pid in 1 $(cat /proc/1/task/1/children); do grep "Max open files" /proc/$pid/limits; done',
      );
      expect(limits.trim().split('\n')).toEqual([
        expect.stringMatching(/^Max open files\s+1024\s+2048\s/),
        expect.stringMatching(/^Max open files\s+1024\s+2048\s/),
      ]);
    });

    it('healthcheck: { disable: true } turns off the image’s failing check', async () => {
      const name = containerOf(env.id, 'nohealth');
      const container = await inspect(name);
      // The image has a check that always fails…
      const image = await docker.getImage(container.Config.Image).inspect();
      expect(image.Config.Healthcheck?.Test).toEqual(['CMD', 'false']);
      // …the container has none, so Docker never judges it (and the environment got ready).
      expect(container.Config.Healthcheck?.Test).toEqual(['NONE']);
      expect(container.State.Health).toBeUndefined();
      expect(container.State.Status).toBe('running');
    });

    it('deploy.replicas: two containers, each its own hostname, both behind the service name', async () => {
      const names = await containersOf(env.id, 'worker');
      expect(names).toEqual([containerOf(env.id, 'worker', 1), containerOf(env.id, 'worker', 2)]);
      const infos = await Promise.all(names.map(inspect));
      expect(infos.map((c) => c.State.Status)).toEqual(['running', 'running']);
      expect(infos.map((c) => c.Config.Hostname)).toEqual(['worker-1', 'worker-2']);
      const ips = infos.map((c) => c.NetworkSettings.Networks[`mayfly-${env.id}`]?.IPAddress).sort();
      const resolved = sh(
        containerOf(env.id, 'api'),
        `python3 -c "import socket; print(' '.join(sorted({a[4][0] for a in socket.getaddrinfo('worker', None, socket.AF_INET)})))"`,
      ).trim();
      expect(resolved.split(' ')).toEqual(ips);
    });

    describe('secrets and configs', () => {
      const api = () => containerOf(env.id, 'api');

      it('a file secret: bound read-only at /run/secrets/<name>', () => {
        expect(sh(api(), 'cat /run/secrets/db_password')).toBe('hunter2\n');
        const write = run(api(), 'echo x > /run/secrets/db_password');
        expect(write.code).not.toBe(0);
        expect(write.err).toContain('Read-only file system');
      });

      it('an environment secret from an input: at its target, with its mode and owner', () => {
        expect(sh(api(), 'cat /run/secrets/api-key.txt')).toBe('k-123');
        expect(sh(api(), 'stat -c "%a %u %g" /run/secrets/api-key.txt')).toBe('400 101 102\n');
        // Its owner may read it but not change it; anybody else may not even read it.
        expect(sh(api(), 'cat /run/secrets/api-key.txt', '101:102')).toBe('k-123');
        const ownerWrite = run(api(), ': >> /run/secrets/api-key.txt', '101:102');
        expect(ownerWrite.code).not.toBe(0);
        expect(ownerWrite.err).toMatch(/Permission denied|Read-only file system/);
        expect(run(api(), 'cat /run/secrets/api-key.txt', '1000:1000').code).not.toBe(0);
      });

      // Docker Compose copies such a secret into the container, where root (CAP_DAC_OVERRIDE) may
      // change it; Mayfly binds a file it wrote, read-only, so not even root can.
      it('an environment secret cannot be changed by root in the container either', () => {
        // `: >>` opens the file for writing and writes nothing: the secret stays as it was.
        const write = run(api(), ': >> /run/secrets/api-key.txt');
        expect(write.code, 'root opened the secret for writing').not.toBe(0);
      });

      it('a content config: ${VAR} interpolated from the inputs, defaults applied, at /<name> and at a target', () => {
        const expected = 'workers = 4\nregion = eu\n';
        expect(sh(api(), 'cat /app_conf')).toBe(expected);
        expect(sh(api(), 'stat -c "%a %u %g" /app_conf')).toBe('444 0 0\n');
        // A target in a folder the image lacks: the folder is made.
        expect(sh(api(), 'cat /etc/app/app.conf')).toBe(expected);
        expect(sh(api(), 'stat -c "%a" /etc/app/app.conf')).toBe('444\n');
        const write = run(api(), ': >> /app_conf', '1000:1000');
        expect(write.code).not.toBe(0);
      });

      it('a file config: bound read-only at its target', () => {
        expect(sh(api(), 'cat /etc/site.conf')).toBe('server_name shop.example;\n');
        const write = run(api(), 'echo x > /etc/site.conf');
        expect(write.code).not.toBe(0);
        expect(write.err).toContain('Read-only file system');
      });

      it('a service not granted them sees none', () => {
        const worker = containerOf(env.id, 'worker');
        expect(run(worker, 'ls /run/secrets').code).not.toBe(0);
        expect(run(worker, 'ls /app_conf').code).not.toBe(0);
      });
    });
  });

  describe('profiles', () => {
    const template = composeTemplate(`  web:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
  debug:
    image: ${TESTKIT_IMAGE}
    command: ["testkit", "sleep"]
    profiles: [debug]
`);

    it('a service of an inactive profile is not created; with the profile active it is', async () => {
      const [plain, withDebug] = await Promise.all([
        t.api<Environment>('POST', '/v1/environments', { name: 'profiles-off', template }),
        t.api<Environment>('POST', '/v1/environments', {
          name: 'profiles-on',
          template,
          profiles: ['debug'],
        }),
      ]);
      expect(plain.status, JSON.stringify(plain.body)).toBe(201);
      expect(withDebug.status, JSON.stringify(withDebug.body)).toBe(201);
      const [off, on] = await Promise.all([
        t.waitForState('profiles-off', ['ready', 'failed']),
        t.waitForState('profiles-on', ['ready', 'failed']),
      ]);
      expect(off.failure).toBeNull();
      expect(on.failure).toBeNull();

      expect(off.services.map((s) => s.name).sort()).toEqual(['web']);
      expect(await containersOf(off.id, 'web')).toEqual([containerOf(off.id, 'web')]);
      expect(await containersOf(off.id, 'debug')).toEqual([]);

      expect(on.services.map((s) => s.name).sort()).toEqual(['debug', 'web']);
      expect(await containersOf(on.id, 'debug')).toEqual([containerOf(on.id, 'debug')]);
      expect((await inspect(containerOf(on.id, 'debug'))).State.Status).toBe('running');

      await Promise.all(['profiles-off', 'profiles-on'].map((n) => t.api('DELETE', `/v1/environments/${n}`)));
      await Promise.all(['profiles-off', 'profiles-on'].map((n) => t.waitForState(n, ['destroyed'])));
    });
  });

  describe('hostile keys are refused at create, before anything exists', () => {
    it.each([
      [
        'extra_hosts to the host gateway',
        `    extra_hosts: ["x:host-gateway"]\n`,
        /"host-gateway" is not allowed: environments never reach the machine they run on/,
      ],
      [
        'a label faking another environment',
        '    labels: { mayfly.env: other }\n',
        /label "mayfly\.env" is reserved: Mayfly sets the mayfly\.\* labels/,
      ],
      [
        'a secret file outside the bundle',
        '    secrets: [passwd]\nsecrets:\n  passwd: { file: ../../etc/passwd }\n',
        /path "\.\.\/\.\.\/etc\/passwd" is outside the directory templates may use/,
      ],
    ])('%s', async (what, lines, message) => {
      const dir = await makeProject({
        'compose.yaml': `services:\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n${lines}`,
      });
      try {
        const before = await labelledObjects();
        const res = await t.api<ErrorReply>('POST', '/v1/environments', {
          name: 'hostile',
          template: { filename: 'compose.yaml', bundle: await t.upload(dir) },
        });
        expect(res.status, what).toBe(400);
        expect(res.body.error.code).toBe('invalid_template');
        expect(res.body.error.message).toMatch(message);
        expect(res.body.error.issues?.map((i) => i.message)).toEqual([expect.stringMatching(message)]);
        // Nothing was made: no environment of that name, no container, network or volume.
        expect((await t.api('GET', '/v1/environments/hostile')).status).toBe(404);
        expect(await labelledObjects()).toEqual(before);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('secrets and configs given as content are binds, not copies', () => {
    // A copy into the container (Compose's way) is refused by the engine on a read-only root
    // file system ("container rootfs is marked read-only").
    it('a read-only service can be granted a content config', async () => {
      const res = await t.api<Environment>('POST', '/v1/environments', {
        name: 'ro-config',
        template: {
          filename: 'compose.yaml',
          content: `configs:\n  app: { content: "hello" }\nservices:\n  web:\n    image: ${TESTKIT_IMAGE}\n    command: ["testkit", "sleep"]\n    read_only: true\n    configs: [app]\n`,
        },
      });
      expect(res.status).toBe(201);
      try {
        const ro = await t.waitForState('ro-config', ['ready', 'failed']);
        expect(ro.failure, JSON.stringify(ro.failure)).toBeNull();
        expect(sh(containerOf(ro.id, 'web'), 'cat /app')).toBe('hello');
      } finally {
        await t.api('DELETE', '/v1/environments/ro-config');
        await t.waitForState('ro-config', ['destroyed']);
      }
    });

    // A copy into the container would be hidden by the tmpfs the engine mounts on /run at start;
    // binds are mounted over the tmpfs.
    it('a secret from an input is there in a service with a tmpfs on /run', () => {
      const runtmp = containerOf(env.id, 'runtmp');
      expect(mountOf(runtmp, '/run')?.[2]).toBe('tmpfs');
      expect(sh(runtmp, 'cat /run/secrets/db_password')).toBe('hunter2\n');
      const secret = run(runtmp, 'cat /run/secrets/api_key');
      expect(secret.out, secret.err).toBe('k-123');
    });
  });

  it('destroying the environment removes every container, network and volume it had', async () => {
    await t.api('DELETE', '/v1/environments/keys');
    await t.waitForState('keys', ['destroyed']);
    await until('the objects of keys to be gone', async () => {
      const left = (await labelledObjects()).filter((o) => o.includes(env.id));
      return left.length === 0 ? true : undefined;
    });
  });
});
