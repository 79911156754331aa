import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cidrContains, cidrsOverlap } from '../net/ipv4-cidr.js';
import {
  canonicalCidr,
  EgressRefusedError,
  egressRefusal,
  egressRules,
  MAX_ADDRESSES_PER_NAME,
  NEVER_REACHABLE,
  NON_PUBLIC,
  permittedRangeProblem,
  resolveListedName,
} from './egress-policy.js';

/** The verdict the rules give an address: the first rule whose range holds it; none: refused. */
const verdict = (rules: ReturnType<typeof egressRules>, address: string) =>
  rules.find((rule) => cidrContains(rule.cidr, `${address}/32`))?.verdict ?? 'reject';

describe('egress policy', () => {
  it('CIDRs nest or do not meet', () => {
    expect(cidrContains('10.0.0.0/8', '10.2.3.0/24')).toBe(true);
    expect(cidrContains('10.2.3.0/24', '10.0.0.0/8')).toBe(false);
    expect(cidrContains('0.0.0.0/0', '192.168.1.1/32')).toBe(true);
    expect(cidrsOverlap('172.16.0.0/12', '172.31.255.255/32')).toBe(true);
    expect(cidrsOverlap('172.16.0.0/12', '172.32.0.0/16')).toBe(false);
  });

  it('refuses what lies in never-reachable or (unless permitted) private space, with why', () => {
    expect(egressRefusal('127.0.0.1/32', [])).toMatch(/127\.0\.0\.0\/8, which no sandbox reaches/);
    expect(egressRefusal('169.254.169.254/32', ['169.254.0.0/16'])).toMatch(/no sandbox reaches/);
    expect(egressRefusal('172.17.0.0/16', [])).toMatch(
      /private address space \(172\.16\.0\.0\/12\).*--sandbox-allow-private/,
    );
    expect(egressRefusal('192.168.1.10/32', [])).toMatch(/private/);
    expect(egressRefusal('100.64.1.1/32', [])).toMatch(/private/);
    expect(egressRefusal('10.5.0.0/16', ['10.5.0.0/16'])).toBeNull();
    expect(egressRefusal('10.5.1.2/32', ['10.5.0.0/16'])).toBeNull();
    // Wider than the permitted range: not inside it, so refused.
    expect(egressRefusal('10.0.0.0/8', ['10.5.0.0/16'])).toMatch(/private/);
    // Public, or wider than every private range: listed (the rules keep the private parts shut).
    expect(egressRefusal('93.184.216.34/32', [])).toBeNull();
    expect(egressRefusal('0.0.0.0/0', [])).toBeNull();
    expect(egressRefusal('8.0.0.0/5', [])).toBeNull();
  });

  it('writes ranges as iptables reads them, and permits only private ranges', () => {
    expect(canonicalCidr('08.8.8.8/32')).toBe('8.8.8.8/32'); // iptables would read 08 as octal
    expect(canonicalCidr('10.1.2.3/8')).toBe('10.0.0.0/8');
    expect(egressRefusal('168.63.129.16/32', [])).toMatch(/no sandbox reaches/);
    expect(permittedRangeProblem('10.20.0.0/16')).toBeNull();
    expect(permittedRangeProblem('0.0.0.0/0')).toMatch(/not inside a private range/);
    expect(permittedRangeProblem('8.8.8.0/24')).toMatch(/not inside a private range/);
  });

  it('0.0.0.0/0 opens the public internet and nothing else; permitted private space only where listed in it', () => {
    const open = egressRules(['0.0.0.0/0'], ['10.5.0.0/16']);
    for (const address of ['1.1.1.1', '93.184.216.34', '8.8.8.8'])
      expect(verdict(open, address)).toBe('accept');
    for (const address of [
      '127.0.0.1',
      '169.254.169.254',
      '10.5.0.7', // permitted, but not listed inside it
      '10.1.1.1',
      '172.17.0.2',
      '192.168.1.1',
      '100.64.0.1',
      '224.0.0.1',
      '0.0.0.0',
    ])
      expect(verdict(open, address), address).toBe('reject');

    const listedInside = egressRules(['10.5.0.7/32', '1.2.3.4/32'], ['10.5.0.0/16']);
    expect(verdict(listedInside, '10.5.0.7')).toBe('accept');
    expect(verdict(listedInside, '10.5.0.8')).toBe('reject');
    expect(verdict(listedInside, '1.2.3.4')).toBe('accept');
    expect(verdict(listedInside, '1.2.3.5')).toBe('reject');
    // Whatever the list, every never-reachable and private range is in the rules.
    const cidrs = listedInside.map((rule) => rule.cidr);
    for (const range of [...NEVER_REACHABLE, ...NON_PUBLIC]) expect(cidrs).toContain(range);
  });

  describe('listed names', () => {
    // A DNS server on loopback that answers A queries from a table (and never answers `slow.test`).
    const answers: Record<string, string[]> = {
      'public.test': ['93.184.216.34'],
      'inside.test': ['10.5.0.7'],
      'mixed.test': ['93.184.216.34', '192.168.1.1'],
      'many.test': Array.from({ length: 40 }, (_, i) => `93.184.216.${i + 1}`),
      'none.test': [],
    };
    let server: dgram.Socket;
    let servers: string[];
    beforeAll(async () => {
      server = dgram.createSocket('udp4');
      server.on('message', (message, from) => {
        const query = dnsPacket.decode(message);
        const name = query.questions?.[0]?.name ?? '';
        if (name === 'slow.test') return;
        const reply = dnsPacket.encode({
          type: 'response',
          id: query.id,
          // NXDOMAIN (rcode 3) for a name not in the table.
          flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (name in answers ? 0 : 3),
          questions: query.questions,
          answers: (answers[name] ?? []).map((data) => ({ type: 'A', name, ttl: 60, class: 'IN', data })),
        } as dnsPacket.Packet);
        server.send(reply, from.port, from.address);
      });
      await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve));
      servers = [`127.0.0.1:${server.address().port}`];
    });
    afterAll(() => server.close());
    const resolve = (name: string, permitted: string[] = [], timeoutMs = 1_000) =>
      resolveListedName(name, permitted, { servers, timeoutMs });
    const refusal = (name: string, permitted: string[] = [], timeoutMs = 1_000) =>
      resolve(name, permitted, timeoutMs).then(
        () => 'resolved',
        (err: unknown) => (err instanceof EgressRefusedError ? err.message : `not refused: ${String(err)}`),
      );

    it('opens the addresses of a public name, at most 16', async () => {
      expect(await resolve('public.test')).toEqual(['93.184.216.34']);
      expect(await resolve('many.test')).toHaveLength(MAX_ADDRESSES_PER_NAME);
    });

    it('refuses a name pointing into private space unless permitted, one with any private answer, and names without answers', async () => {
      expect(await refusal('inside.test')).toMatch(
        /inside\.test resolves to 10\.5\.0\.7: .*private address space/,
      );
      expect(await resolve('inside.test', ['10.5.0.0/16'])).toEqual(['10.5.0.7']);
      expect(await refusal('mixed.test')).toMatch(/mixed\.test resolves to 192\.168\.1\.1/);
      expect(await refusal('none.test')).toMatch(/cannot resolve none\.test|none\.test has no IPv4 address/);
      expect(await refusal('nowhere.test')).toMatch(/cannot resolve nowhere\.test \(E[A-Z]+\)/);
    });

    it('gives up on a server that does not answer', async () => {
      expect(await refusal('slow.test', [], 500)).toBe('cannot resolve slow.test (no answer within 500 ms)');
    });
  });
});
