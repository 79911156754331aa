/**
 * Egress allow-lists for sandboxes on Docker: a sandbox that may reach some addresses gets a bridge
 * of its own, and iptables rules (tagged with a comment naming the sandbox) that let out only
 * traffic to those addresses. Three chains of Mayfly's, jumped to first:
 *
 *   MAYFLY-SBX-TO    (from DOCKER-USER) nothing new enters a sandbox's bridge: answers only
 *   MAYFLY-SBX-FROM  (from DOCKER-USER) out of a sandbox's bridge: never to the blocked ranges
 *                    (environments' and sandboxes' networks, link-local metadata), else only to
 *                    the allowed addresses, else rejected
 *   MAYFLY-SBX-HOST  (from INPUT) nothing from a sandbox's bridge reaches the host itself
 *
 * TO is looked at before FROM, so one sandbox's allowed range never opens another sandbox.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const CHAINS = { to: 'MAYFLY-SBX-TO', from: 'MAYFLY-SBX-FROM', host: 'MAYFLY-SBX-HOST' } as const;

/** The comment every rule of one sandbox carries. */
export const ruleTag = (id: string) => `mayfly-sbx-${id}`;

/** Linux interface names are at most 15 characters: `mfs` + 12 of the sandbox id. */
export const bridgeName = (id: string) => `mfs${id.slice(0, 12)}`;

/** The iptables argument lists that open `allow` (and nothing in `blocked`) for one sandbox's bridge. */
export function sandboxRules(
  id: string,
  bridge: string,
  allow: readonly string[],
  blocked: readonly string[],
): string[][] {
  const tag = ['-m', 'comment', '--comment', ruleTag(id)];
  return [
    [
      '-A',
      CHAINS.to,
      '-o',
      bridge,
      '-m',
      'conntrack',
      '--ctstate',
      'RELATED,ESTABLISHED',
      ...tag,
      '-j',
      'ACCEPT',
    ],
    ['-A', CHAINS.to, '-o', bridge, ...tag, '-j', 'DROP'],
    ...blocked.map((cidr) => ['-A', CHAINS.from, '-i', bridge, '-d', cidr, ...tag, '-j', 'REJECT']),
    ...allow.map((cidr) => ['-A', CHAINS.from, '-i', bridge, '-d', cidr, ...tag, '-j', 'ACCEPT']),
    ['-A', CHAINS.from, '-i', bridge, ...tag, '-j', 'REJECT'],
    ['-A', CHAINS.host, '-i', bridge, ...tag, '-j', 'REJECT'],
  ];
}

export class EgressFirewall {
  private ready: Promise<void> | undefined;
  /** iptables calls one at a time (they also wait for the xtables lock: `-w`). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly binary = 'iptables') {}

  private iptables(args: string[]): Promise<string> {
    const next = this.queue.then(async () => (await run(this.binary, ['-w', ...args])).stdout);
    this.queue = next.catch(() => {});
    return next;
  }

  /** True when this process may change the host's firewall (root, iptables there). */
  async available(): Promise<boolean> {
    try {
      await this.iptables(['-S', 'DOCKER-USER']);
      return true;
    } catch {
      return false;
    }
  }

  /** The chains, and the jumps to them (first in DOCKER-USER and INPUT), made once. */
  private prepare(): Promise<void> {
    this.ready ??= (async () => {
      for (const chain of Object.values(CHAINS)) await this.iptables(['-N', chain]).catch(() => {});
      const jumps: [string, string][] = [
        ['DOCKER-USER', CHAINS.from],
        ['DOCKER-USER', CHAINS.to],
        ['INPUT', CHAINS.host],
      ];
      // Inserted at the top in reverse: TO ends up before FROM.
      for (const [parent, chain] of jumps) {
        const present = await this.iptables(['-C', parent, '-j', chain]).then(
          () => true,
          () => false,
        );
        if (!present) await this.iptables(['-I', parent, '1', '-j', chain]);
      }
    })();
    this.ready.catch(() => {
      this.ready = undefined;
    });
    return this.ready;
  }

  async open(
    id: string,
    bridge: string,
    allow: readonly string[],
    blocked: readonly string[],
  ): Promise<void> {
    await this.prepare();
    try {
      for (const rule of sandboxRules(id, bridge, allow, blocked)) await this.iptables(rule);
    } catch (err) {
      await this.close(id);
      throw err;
    }
  }

  /** Removes every rule of the sandbox (idempotent). */
  async close(id: string): Promise<void> {
    const tag = ruleTag(id);
    for (const chain of Object.values(CHAINS)) {
      const rules = await this.iptables(['-S', chain]).catch(() => '');
      for (const line of rules.split('\n')) {
        if (!line.startsWith('-A ') || !`${line} `.includes(`--comment ${tag} `)) continue;
        // `-S` prints rules as they were added; the same words with -D delete one.
        const words = line
          .slice(3)
          .split(' ')
          .map((w) => w.replace(/^"(.*)"$/, '$1'));
        await this.iptables(['-D', ...words]).catch(() => {});
      }
    }
  }
}
