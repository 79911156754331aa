/**
 * What a sandbox's `allowOut` may open, decided once for every driver. Listing the internet
 * (`0.0.0.0/0`) means the public internet: the host's LAN, Docker's other networks and the like
 * are private address space, reachable only inside ranges the operator permits
 * (`mayfly serve --sandbox-allow-private CIDR`), and only when listed within them. Some ranges are
 * never reachable whatever anyone says: this host, link-local (cloud metadata), multicast.
 */
import { Resolver } from 'node:dns/promises';
import { cidrContains, intToIpv4, parseCidr } from '../net/ipv4-cidr.js';

/** Never reachable from a sandbox: "this network", loopback, link-local, multicast, reserved. */
export const NEVER_REACHABLE = [
  '0.0.0.0/8',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '224.0.0.0/4',
  '240.0.0.0/4',
  // Azure's WireServer (extension configuration), public yet reachable from every Azure VM.
  '168.63.129.16/32',
];

/**
 * Not the public internet (RFC 6890): private networks, carrier-grade NAT, the IETF's own block,
 * benchmarking and documentation ranges. Reachable only where the operator permits.
 */
export const NON_PUBLIC = [
  '10.0.0.0/8',
  '100.64.0.0/10',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.88.99.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
];

/** Rules in order; the first whose range holds the destination decides; nothing matched: refused. */
export interface EgressRule {
  cidr: string;
  verdict: 'accept' | 'reject';
}

/** An `allowOut` entry this server will not open, and why (a 400 for the caller). */
export class EgressRefusedError extends Error {}

/**
 * Why `cidr` (an entry, or an address a listed name resolves to) may not be listed; null when it
 * may. A range wider than the private ones (`0.0.0.0/0`) may: the rules keep their private parts shut.
 */
export function egressRefusal(cidr: string, permittedPrivate: readonly string[]): string | null {
  // Two CIDRs either nest or do not meet: a range that overlaps one of these holds it, or is in it.
  const never = NEVER_REACHABLE.find((range) => cidrContains(range, cidr));
  if (never)
    return `${cidr} is in ${never}, which no sandbox reaches (this host, link-local, multicast or reserved)`;
  if (permittedPrivate.some((range) => cidrContains(range, cidr))) return null;
  const inside = NON_PUBLIC.find((range) => cidrContains(range, cidr));
  if (inside)
    return `${cidr} is private address space (${inside}); the server's operator may permit such a range with --sandbox-allow-private`;
  return null;
}

/**
 * The rules for one sandbox's listed ranges (each already passed {@link egressRefusal}): first
 * what is listed inside a permitted private range, then every private range shut, then the rest
 * of what is listed. The never-reachable ranges come first; the driver puts its own (its networks) before them.
 */
export function egressRules(listed: readonly string[], permittedPrivate: readonly string[]): EgressRule[] {
  const isPrivate = (cidr: string) => permittedPrivate.some((range) => cidrContains(range, cidr));
  return [
    ...NEVER_REACHABLE.map((cidr): EgressRule => ({ cidr, verdict: 'reject' })),
    ...listed.filter(isPrivate).map((cidr): EgressRule => ({ cidr, verdict: 'accept' })),
    ...NON_PUBLIC.map((cidr): EgressRule => ({ cidr, verdict: 'reject' })),
    ...listed.filter((cidr) => !isPrivate(cidr)).map((cidr): EgressRule => ({ cidr, verdict: 'accept' })),
  ];
}

/** Most addresses one listed name opens (a name with hundreds would make as many rules). */
export const MAX_ADDRESSES_PER_NAME = 16;
/** Most ranges one sandbox's list opens, names' addresses included: each is a firewall rule. */
export const MAX_LISTED_RANGES = 64;

/** Why a range the operator permits is not a private one (permitting public space would open it first). */
export function permittedRangeProblem(cidr: string): string | null {
  return NON_PUBLIC.some((range) => cidrContains(range, cidr))
    ? null
    : `${cidr} is not inside a private range (${NON_PUBLIC.join(', ')}): only private space needs permitting`;
}

/** The range as iptables must read it: host bits cleared, no leading zeros (`08.1.1.1` is octal there). */
export function canonicalCidr(cidr: string): string {
  const { start, prefix } = parseCidr(cidr);
  return `${intToIpv4(start)}/${prefix}`;
}

/**
 * A listed name's IPv4 addresses, from DNS (c-ares: no thread of the pool that file I/O needs is
 * held, and a slow server is given up on). Refused: no answer in time, none at all, or any
 * answer {@link egressRefusal} refuses — a public name may point into private space.
 */
export async function resolveListedName(
  name: string,
  permittedPrivate: readonly string[],
  options: { timeoutMs?: number; servers?: string[] } = {},
): Promise<string[]> {
  const timeoutMs = options.timeoutMs ?? 3_000;
  const resolver = new Resolver({ timeout: Math.min(timeoutMs, 2_000), tries: 2 });
  if (options.servers) resolver.setServers(options.servers);
  const timer = setTimeout(() => resolver.cancel(), timeoutMs);
  let addresses: string[];
  try {
    addresses = await resolver.resolve4(name);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new EgressRefusedError(
      code === 'ECANCELLED'
        ? `cannot resolve ${name} (no answer within ${timeoutMs} ms)`
        : `cannot resolve ${name} (${code ?? (err as Error).message})`,
    );
  } finally {
    clearTimeout(timer);
  }
  if (addresses.length === 0) throw new EgressRefusedError(`${name} has no IPv4 address`);
  const kept = [...new Set(addresses)].sort().slice(0, MAX_ADDRESSES_PER_NAME);
  for (const address of kept) {
    const why = egressRefusal(`${address}/32`, permittedPrivate);
    if (why) throw new EgressRefusedError(`${name} resolves to ${address}: ${why}`);
  }
  return kept;
}
