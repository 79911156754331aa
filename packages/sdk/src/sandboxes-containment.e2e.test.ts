/**
 * Containment: what hostile code in a sandbox tries, each stopped, with the host unaffected. Against
 * a real server and real Docker, through the SDK.
 */
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../server/src/test-support/test-server.js';
import { CommandTimeoutError, Sandbox } from './index.js';

const PERL_SERVER = `perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { print $c "HTTP/1.0 200 OK\\r\\n\\r\\nsecret\\n"; close $c }'`;

/** A server on every address of the host, noting who connects (nobody from a sandbox may). */
async function hostServer(): Promise<{ host: net.Server; port: number; seen: string[] }> {
  const seen: string[] = [];
  const host = net.createServer((socket) => {
    seen.push(socket.remoteAddress ?? '?');
    socket.destroy();
  });
  await new Promise<void>((resolve) => host.listen(0, '0.0.0.0', resolve));
  return { host, port: (host.address() as net.AddressInfo).port, seen };
}

describe('sandbox containment', () => {
  let t: TestServer;
  let sbx: Sandbox;
  const connection = () => ({ baseUrl: t.server.url, token: t.token });
  beforeAll(async () => {
    t = await startTestServer();
    sbx = await Sandbox.create({ ...connection(), timeoutMs: 300_000 });
  }, 300_000);
  afterAll(async () => {
    for (const s of await Sandbox.list(connection()))
      await (await Sandbox.connect(s.id, connection())).kill();
    await t.close();
  });

  it('a fork bomb hits the pids limit and dies with its timeout; the sandbox and the host go on', async () => {
    // `exec sleep`: the command's own shell must not need a fork after the bomb starts. A shell that
    // cannot fork `sleep` exits 2 at once, and the bomb it started in the background outlives it
    // (what a command leaves behind keeps running, as with docker exec), which left every later
    // test here without a pid (seen in CI).
    const bomb = await sbx.commands
      .run('f() { f | f & }; f; exec sleep 100', { timeoutMs: 3_000 })
      .catch((e: unknown) => e);
    expect(bomb).toBeInstanceOf(CommandTimeoutError);
    const left = await sbx.commands.run('sleep 1; ls /proc | grep -c "^[0-9]"');
    expect(Number(left.stdout.trim())).toBeLessThan(20);
    expect(execFileSync('sh', ['-c', 'echo host-ok'], { encoding: 'utf8' })).toBe('host-ok\n');
  });

  it('filling its disk fails with no space left, and it goes on', async () => {
    const fill = await sbx.commands.run(
      'head -c 2000000000 /dev/zero > /home/user/fill; echo "status $?"; rm -f /home/user/fill',
    );
    expect(fill.stderr).toMatch(/No space left on device/);
    expect(fill.stdout).toBe('status 1\n');
    expect((await sbx.commands.run('echo alive')).stdout).toBe('alive\n');
  });

  it('sees neither the host’s files nor the Docker socket, and cannot write the image', async () => {
    const look = await sbx.commands.run(
      `test -e /var/run/docker.sock && echo socket; test -e /run/docker.sock && echo socket; test -e ${t.dataDir} && echo datadir; touch /etc/x 2>/dev/null || echo read-only; id -u`,
    );
    expect(look.stdout).toBe('read-only\n1000\n');
  });

  it('reaches no server of the host (loopback or bridge), nor another sandbox', async () => {
    const { host, port, seen } = await hostServer();
    const bridge = execFileSync(
      'docker',
      ['network', 'inspect', 'bridge', '--format', '{{(index .IPAM.Config 0).Gateway}}'],
      {
        encoding: 'utf8',
      },
    ).trim();
    try {
      const other = await Sandbox.create(connection());
      await other.commands.run(PERL_SERVER, { background: true, timeoutMs: 0 });
      const probe = await sbx.commands.run(
        `for target in 127.0.0.1:${port} ${bridge}:${port} 127.0.0.1:8000 169.254.169.254:80 1.1.1.1:80; do
           curl -s --max-time 3 "http://$target/" >/dev/null && echo "reached $target" || echo "blocked $target"
         done; ls /sys/class/net`,
      );
      expect(probe.stdout).toBe(
        `${[`127.0.0.1:${port}`, `${bridge}:${port}`, '127.0.0.1:8000', '169.254.169.254:80', '1.1.1.1:80']
          .map((target) => `blocked ${target}\n`)
          .join('')}lo\n`,
      );
      expect(seen).toEqual([]);
      // The other sandbox's server is there, for itself only.
      expect((await other.commands.run('curl -s http://127.0.0.1:8000/')).stdout).toBe('secret\n');
      await other.kill();
    } finally {
      host.close();
    }
  });

  it('with an allow-list it reaches what is listed and nothing else: not the host, another sandbox, an address not listed', async () => {
    const suffix = Math.random().toString(36).slice(2, 8);
    const network = `mayfly-test-egress-${suffix}`;
    const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();
    const ipOf = (container: string) =>
      docker('inspect', container, '--format', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}');
    const { host, port, seen } = await hostServer();
    let permitting: TestServer | undefined;
    docker('network', 'create', network);
    const targets = [`${network}-listed`, `${network}-other`];
    try {
      for (const [i, name] of targets.entries())
        docker(
          'run',
          '-d',
          '--name',
          name,
          '--network',
          network,
          'mayfly-test/testkit:latest',
          'testkit',
          'http',
          '--text',
          `target ${i}`,
        );
      const [listed, unlisted] = targets.map(ipOf);
      const subnet = docker('network', 'inspect', network, '--format', '{{(index .IPAM.Config 0).Subnet}}');
      const gateway = docker('network', 'inspect', network, '--format', '{{(index .IPAM.Config 0).Gateway}}');
      // The test network is private address space: not listable unless the operator permits it.
      await expect(Sandbox.create({ ...connection(), allowOut: [listed!] })).rejects.toThrow(
        /allowOut: .* is private address space .*--sandbox-allow-private/,
      );
      permitting = await startTestServer({ sandboxAllowPrivate: [subnet] });
      const permitted = { baseUrl: permitting.server.url, token: permitting.token };
      // Another sandbox with a network of its own, serving on all its addresses.
      const neighbour = await Sandbox.create({ ...permitted, allowOut: [`${listed}`] });
      await neighbour.commands.run(PERL_SERVER.replace('"127.0.0.1"', '"0.0.0.0"'), {
        background: true,
        timeoutMs: 0,
      });
      const neighbourIp = ipOf(`mayfly-sbx-${neighbour.id}`);
      // Listing another sandbox or link-local is refused outright; listing the host's address or
      // everything (0.0.0.0/0) does not open them, nor what is not listed in the permitted range.
      for (const refused of [`${neighbourIp}/32`, '169.254.169.254'])
        await expect(Sandbox.create({ ...permitted, allowOut: [refused] })).rejects.toThrow(/allowOut/);
      const open = await Sandbox.create({
        ...permitted,
        allowOut: [listed!, `${gateway}/32`, '0.0.0.0/0'],
      });
      const probe = await open.commands.run(
        `for target in ${listed}:8080 ${unlisted}:8080 ${gateway}:${port} ${neighbourIp}:8000 169.254.169.254:80; do
           curl -s --max-time 3 "http://$target/" >/dev/null && echo "reached $target" || echo "blocked $target"
         done`,
      );
      expect(probe.stdout).toBe(
        [
          `reached ${listed}:8080`,
          `blocked ${unlisted}:8080`,
          `blocked ${gateway}:${port}`,
          `blocked ${neighbourIp}:8000`,
          'blocked 169.254.169.254:80',
          '',
        ].join('\n'),
      );
      expect((await open.commands.run(`curl -s http://${listed}:8080/`)).stdout).toBe('target 0');
      // No IPv6 (the firewall's rules are IPv4) and no DNS through the host's resolver: a name the
      // host resolves (the npm registry, which this machine reaches) is not resolved in it.
      const quiet = await open.commands.run(
        'wc -l < /proc/net/if_inet6 2>/dev/null || echo 0; timeout 5 getent hosts registry.npmjs.org >/dev/null && echo resolved || echo no-dns',
        { timeoutMs: 30_000 },
      );
      expect(quiet.stdout).toBe('0\nno-dns\n');
      expect(seen).toEqual([]);
      // A sandbox without a list still has no network at all.
      expect((await sbx.commands.run('ls /sys/class/net')).stdout).toBe('lo\n');
      // An entry that is neither an address nor a name is refused before anything is made.
      await expect(Sandbox.create({ ...connection(), allowOut: ['not a host!'] })).rejects.toThrow(
        /allowOut/,
      );

      // Killed: its bridge and its firewall rules are gone.
      await open.kill();
      await neighbour.kill();
      for (const id of [open.id, neighbour.id]) {
        expect(docker('network', 'ls', '-q', '--filter', `label=mayfly.sandbox=${id}`)).toBe('');
        expect(execFileSync('iptables', ['-w', '-S'], { encoding: 'utf8' })).not.toContain(
          `mayfly-sbx-${id}`,
        );
      }
    } finally {
      host.close();
      if (permitting) {
        for (const s of await Sandbox.list({ baseUrl: permitting.server.url, token: permitting.token }))
          await (
            await Sandbox.connect(s.id, { baseUrl: permitting.server.url, token: permitting.token })
          ).kill();
        await permitting.close();
      }
      for (const name of targets) execFileSync('docker', ['rm', '-f', name], { stdio: 'ignore' });
      execFileSync('docker', ['network', 'rm', network], { stdio: 'ignore' });
    }
  });

  it('a memory bomb is killed by the kernel, and the sandbox ends with oom recorded', async () => {
    const small = await Sandbox.create({ ...connection(), memoryMb: 96 });
    await small.commands
      .run(`perl -e '$x = "a" x (1 << 20); @a = (); push @a, $x . $_ for 1 .. 100000'`, { timeoutMs: 30_000 })
      .catch(() => {});
    let info = await small.getInfo();
    for (let i = 0; i < 100 && info.state !== 'ended'; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      info = await small.getInfo();
    }
    expect(info).toMatchObject({ state: 'ended', endedReason: 'oom' });
    expect(info.peakMemoryBytes).toBeGreaterThan(64 * 1024 * 1024);
    expect(execFileSync('sh', ['-c', 'echo host-ok'], { encoding: 'utf8' })).toBe('host-ok\n');
  });
});
