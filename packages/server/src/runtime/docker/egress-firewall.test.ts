/**
 * The egress firewall on the host's real iptables: its chains stay first however another tool
 * reorders them, and a sandbox bridge without rules of its own is shut, not open (fail closed).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTKIT_IMAGE } from '../../test-support/global-setup.js';
import { CHAINS, EgressFirewall, PARENT_RULES } from './egress-firewall.js';

const iptables = (...args: string[]) => execFileSync('iptables', ['-w', ...args], { encoding: 'utf8' });
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8' }).trim();
const firstRules = (parent: string, n: number) =>
  iptables('-S', parent)
    .split('\n')
    .filter((line) => line.startsWith('-A '))
    .slice(0, n);
const expected = (parent: keyof typeof PARENT_RULES) =>
  PARENT_RULES[parent].map((rule) => `-A ${parent} ${rule.join(' ')}`);

describe('egress firewall', () => {
  const firewall = new EgressFirewall();
  beforeAll(async () => {
    await firewall.ensure();
  });

  it('keeps its jumps and catch-alls first after another tool reordered or removed them, deleting nobody else’s rule', async () => {
    for (const parent of ['DOCKER-USER', 'INPUT'] as const)
      expect(firstRules(parent, PARENT_RULES[parent].length)).toEqual(expected(parent));
    // Someone removes a jump and puts a rule of theirs first.
    iptables('-D', 'DOCKER-USER', '-o', 'mfs+', '-j', CHAINS.to);
    iptables('-I', 'DOCKER-USER', '1', '-p', 'udp', '--dport', '9', '-j', 'RETURN');
    iptables('-D', 'INPUT', '-i', 'mfs+', '-j', CHAINS.host);
    // And a jump as earlier versions made it (for every packet), which goes.
    iptables('-A', 'DOCKER-USER', '-j', CHAINS.from);
    try {
      await firewall.ensure();
      for (const parent of ['DOCKER-USER', 'INPUT'] as const) {
        expect(firstRules(parent, PARENT_RULES[parent].length)).toEqual(expected(parent));
        const all = iptables('-S', parent).split('\n');
        expect(all).not.toContain(`-A ${parent} -j ${CHAINS.from}`);
      }
      // Several at once (two creates, a sweep, another installation) delete nothing of anyone’s.
      iptables('-D', 'DOCKER-USER', '-i', 'mfs+', '-j', CHAINS.from);
      await Promise.all([firewall.ensure(), firewall.ensure(), new EgressFirewall().ensure()]);
      expect(firstRules('DOCKER-USER', PARENT_RULES['DOCKER-USER'].length)).toEqual(expected('DOCKER-USER'));
      // Theirs is still there, after Mayfly's.
      expect(iptables('-S', 'DOCKER-USER')).toContain('-A DOCKER-USER -p udp -m udp --dport 9 -j RETURN');
    } finally {
      iptables('-D', 'DOCKER-USER', '-p', 'udp', '--dport', '9', '-j', 'RETURN');
      // The copies left below the top (ensure never deletes by number; here nothing else runs).
      for (const parent of ['DOCKER-USER', 'INPUT'] as const) {
        const lines = iptables('-S', parent)
          .split('\n')
          .filter((l) => l.startsWith('-A '));
        for (let n = lines.length; n > PARENT_RULES[parent].length; n--)
          if (expected(parent).includes(lines[n - 1]!)) iptables('-D', parent, String(n));
      }
    }
  });

  describe('a sandbox bridge whose rules are missing', () => {
    const suffix = randomBytes(4).toString('hex');
    const shut = `mayfly-test-shut-${suffix}`;
    // A network namespace of the test's, routed from the host (not a Docker network: Docker's own
    // isolation between its bridges would hide a hole), with a server in it.
    const ns = `mayfly-test-${suffix}`;
    const hostSide = `mft${suffix}`;
    const third = 100 + (parseInt(suffix.slice(0, 2), 16) % 100);
    const outsideIp = `10.199.${third}.2`;
    let outsideServer: ChildProcess;
    beforeAll(async () => {
      docker('network', 'create', '-o', `com.docker.network.bridge.name=mfs${suffix}x`, shut);
      const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
      ip('netns', 'add', ns);
      ip('link', 'add', hostSide, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      ip('addr', 'add', `10.199.${third}.1/30`, 'dev', hostSide);
      ip('link', 'set', hostSide, 'up');
      ip('-n', ns, 'addr', 'add', `${outsideIp}/30`, 'dev', 'eth0');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'route', 'add', 'default', 'via', `10.199.${third}.1`);
      outsideServer = spawn('ip', [
        'netns',
        'exec',
        ns,
        process.execPath,
        '-e',
        "require('node:http').createServer((q, r) => r.end('outside')).listen(8080, () => console.log('up'))",
      ]);
      await new Promise((resolve) => outsideServer.stdout!.once('data', resolve));
    });
    afterAll(() => {
      outsideServer?.kill();
      execFileSync('docker', ['rm', '-f', `${shut}-probe`], { stdio: 'ignore' });
      execFileSync('docker', ['network', 'rm', shut], { stdio: 'ignore' });
      execFileSync('ip', ['link', 'del', hostSide], { stdio: 'ignore' });
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    });
    const probe = (network: string, targets: string[]) =>
      docker(
        'run',
        '--rm',
        '--network',
        network,
        TESTKIT_IMAGE,
        'sh',
        '-c',
        // (busybox nc: connects, sends a request, exits 0 once the server closes; 1 when refused or dropped)
        `for t in ${targets.join(' ')}; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 "\${t%:*}" "\${t#*:}" >/dev/null 2>&1 && echo "reached $t" || echo "blocked $t"; done`,
      ).split('\n');

    it('lets nothing out, to a network beyond the host or to the host itself', async () => {
      const seen: string[] = [];
      const host = net.createServer((socket) => {
        seen.push(socket.remoteAddress ?? '?');
        socket.destroy();
      });
      await new Promise<void>((resolve) => host.listen(0, '0.0.0.0', resolve));
      const port = (host.address() as net.AddressInfo).port;
      try {
        const gateway = docker('network', 'inspect', shut, '--format', '{{(index .IPAM.Config 0).Gateway}}');
        expect(probe(shut, [`${outsideIp}:8080`, `${gateway}:${port}`])).toEqual([
          `blocked ${outsideIp}:8080`,
          `blocked ${gateway}:${port}`,
        ]);
        expect(seen).toEqual([]);
        // From Docker's default bridge, which is not a sandbox's, the same server answers.
        expect(probe('bridge', [`${outsideIp}:8080`])).toEqual([`reached ${outsideIp}:8080`]);
      } finally {
        host.close();
      }
    });
  });
});
