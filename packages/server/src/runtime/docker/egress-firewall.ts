/**
 * Egress allow-lists for sandboxes on Docker: a sandbox that may reach some addresses gets a bridge
 * of its own, and iptables rules (tagged with a comment naming the sandbox) that let out only
 * traffic to those addresses. Three chains of Mayfly's, jumped to first:
 *
 *   MAYFLY-SBX-TO    (from DOCKER-USER) nothing new enters a sandbox's bridge: answers only
 *   MAYFLY-SBX-FROM  (from DOCKER-USER) out of a sandbox's bridge: never to the blocked ranges
 *                    (environments' and sandboxes' networks), then the sandbox's rules in order
 *                    (egress-policy.ts: never link-local or loopback, private space only where
 *                    permitted), else rejected
 *   MAYFLY-SBX-HOST  (from INPUT) nothing from a sandbox's bridge reaches the host itself
 *
 * TO is looked at before FROM, so one sandbox's allowed range never opens another sandbox. After
 * the jumps, DOCKER-USER and INPUT reject anything else to or from any sandbox bridge: a bridge
 * whose rules are missing (a crash, a flushed chain) is shut, not open.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { EgressRule } from '../../sandbox/egress-policy.js';

const run = promisify(execFile);

export const CHAINS = { to: 'MAYFLY-SBX-TO', from: 'MAYFLY-SBX-FROM', host: 'MAYFLY-SBX-HOST' } as const;

/** The comment every rule of one sandbox carries. */
export const ruleTag = (id: string) => `mayfly-sbx-${id}`;

/** Linux interface names are at most 15 characters: `mfs` + 12 of the sandbox id. */
export const bridgeName = (id: string) => `mfs${id.slice(0, 12)}`;

/**
 * The iptables argument lists for one sandbox's bridge: `blocked` (the driver's own networks)
 * rejected, then `rules` in order, then everything else rejected; nothing new in; not the host.
 */
export function sandboxRules(
  id: string,
  bridge: string,
  rules: readonly EgressRule[],
  blocked: readonly string[],
): string[][] {
  const tag = ['-m', 'comment', '--comment', ruleTag(id)];
  const from = (cidr: string | null, verdict: 'ACCEPT' | 'REJECT') => [
    '-A',
    CHAINS.from,
    '-i',
    bridge,
    ...(cidr ? ['-d', cidr] : []),
    ...tag,
    '-j',
    verdict,
  ];
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
    ...blocked.map((cidr) => from(cidr, 'REJECT')),
    ...rules.map((rule) => from(rule.cidr, rule.verdict === 'accept' ? 'ACCEPT' : 'REJECT')),
    from(null, 'REJECT'),
    ['-A', CHAINS.host, '-i', bridge, ...tag, '-j', 'REJECT'],
  ];
}

/** Every sandbox bridge's name matches this (iptables' `+` wildcard). */
const ANY_BRIDGE = 'mfs+';

/**
 * The first rules of the chains Mayfly jumps from, in order: its chains, then a catch-all for any
 * sandbox bridge whose own rules are missing (fail closed). As `iptables -S` prints them.
 */
export const PARENT_RULES: Record<'DOCKER-USER' | 'INPUT', string[][]> = {
  // Only sandbox bridges' traffic walks Mayfly's chains: every other packet passes at once.
  'DOCKER-USER': [
    ['-o', ANY_BRIDGE, '-j', CHAINS.to],
    ['-i', ANY_BRIDGE, '-j', CHAINS.from],
    ['-i', ANY_BRIDGE, '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable'],
    ['-o', ANY_BRIDGE, '-j', 'DROP'],
  ],
  INPUT: [
    ['-i', ANY_BRIDGE, '-j', CHAINS.host],
    ['-i', ANY_BRIDGE, '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable'],
  ],
};

export class EgressFirewall {
  private ensuring: Promise<void> | undefined;
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

  /**
   * Mayfly's chains, and {@link PARENT_RULES} first in DOCKER-USER and INPUT. Checked on every
   * call (another tool may have flushed or reordered them), put back on top when they are not so;
   * there is no moment without them.
   */
  ensure(): Promise<void> {
    // One pass at a time in this process (several creates and the sweep may ask at once).
    this.ensuring ??= this.ensureOnce().finally(() => {
      this.ensuring = undefined;
    });
    return this.ensuring;
  }

  private async ensureOnce(): Promise<void> {
    for (const chain of Object.values(CHAINS)) await this.iptables(['-N', chain]).catch(() => {});
    const list = async (parent: string) =>
      (await this.iptables(['-S', parent])).split('\n').filter((l) => l.startsWith('-A '));
    for (const [parent, rules] of Object.entries(PARENT_RULES)) {
      const expected = rules.map((rule) => `-A ${parent} ${rule.join(' ')}`);
      if ((await list(parent)).slice(0, rules.length).join('\n') !== expected.join('\n'))
        for (const [i, rule] of rules.entries()) await this.iptables(['-I', parent, String(i + 1), ...rule]);
      // Jumps as earlier versions made them (for every packet) go, deleted by their text. Older
      // copies of the current rules stay: deleting by number could hit someone else's rule when
      // another process changes the chain meanwhile, and by text would hit the copy just made.
      for (const chain of Object.values(CHAINS))
        while (
          await this.iptables(['-D', parent, '-j', chain]).then(
            () => true,
            () => false,
          )
        );
    }
  }

  async open(
    id: string,
    bridge: string,
    rules: readonly EgressRule[],
    blocked: readonly string[],
  ): Promise<void> {
    await this.ensure();
    try {
      for (const rule of sandboxRules(id, bridge, rules, blocked)) await this.iptables(rule);
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
